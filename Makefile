# dvt-search: two commands for a new user —  `make demo`  and  `make test`.
# Both create .venv (if needed) and install the project from this repository's own files.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# torch/torchvision are installed first and pinned to builds pip can take without a multi-GB download on
# the CPU dev machines; on a GPU cluster override, e.g.  make install TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test lint format bench mutants clean sysdeps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,export,dashboard]"
	touch $(STAMP)

install: $(STAMP)

# System packages the test suite needs (sshd for the real `ray up` launch flow, Chromium for the
# report screenshot test). Root on Debian/Ubuntu only; elsewhere those tests skip with a reason.
sysdeps:
	@bash scripts/sysdeps.sh

demo: $(STAMP)
	$(BIN)/dvt-search demo --out $(DEMO_DIR)

test: $(STAMP) sysdeps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dvt_search tests bench
	$(BIN)/ruff format --check dvt_search tests bench

format: $(STAMP)
	$(BIN)/ruff format dvt_search tests bench
	$(BIN)/ruff check --fix dvt_search tests bench

bench: $(STAMP)
	$(PY) bench/run_all.py

# The seven deliberate bugs of issue 11 (thresholds on test, DeLong-only significance, ...): each applied to a
# temporary copy of the package; reports caught/missed per bug (bench/mutation_check.py, ~2 min).
mutants: $(STAMP)
	$(PY) bench/mutation_check.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
