"""What a search prints: the project's lines, not Tune's banners or Optuna's INFO lines and warnings.

A real ``dvt-search search`` in a subprocess (the ``scripted`` test family, a conditional space so Optuna's
TPE takes ``group=True``, which is experimental), its stdout and stderr captured as a terminal would show
them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Lines Ray Tune and Optuna print on their own (today's Ray 2.60 / Optuna 5 wording).
LIBRARY_LINES = (
    "Configuration for experiment",
    "View detailed results here",
    "To visualize your results with TensorBoard",
    "A new study created in Journal",
    "ExperimentalWarning",
    "finished with value",
)


def test_search_terminal_shows_only_the_projects_lines(phantom, tmp_path) -> None:
    spaces = write_spaces(
        tmp_path / "spaces",
        {
            "scripted": {
                "params": {
                    "seed": {"type": "categorical", "choices": [0, 1]},
                    "quality": {"type": "float", "low": 0.1, "high": 1.0, "when": {"seed": [0]}},
                },
                "fixed": {"epoch_s": 0.1},
            }
        },
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "dvt_search.cli", "search", "--data", str(phantom), "--size", "32",
           "--storage", str(tmp_path / "runs"), "--name", "quiet", "--space-dir", str(spaces),
           "--plugin", PLUGIN, "--family", "scripted", "--trials", "2", "--max-epochs", "2",
           "--scheduler", "fifo", "--no-dashboard", "--progress-every", "1000"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, out[-3000:] + err[-3000:]
    for line in LIBRARY_LINES:
        assert line not in out and line not in err, f"{line!r} reached the terminal:\n{out}\n{err}"
    # The project's own lines are all there: the run, the family's start, its progress, the best trial.
    assert "[scripted] searching 2 trials" in out
    assert "[scripted] 2/2 done" in out
    assert re.search(r"best scripted: trial \w+ val_auc", out)
    # One line per finished epoch from each trial process, forwarded by Ray to the driver (job logs).
    run = RunDir(tmp_path / "runs" / "quiet")
    trials = run.trials("scripted")
    assert len(trials) == 2
    for rec in trials:
        for epoch in (1, 2):
            assert f"[scripted] trial {rec.trial_id} epoch {epoch}/2: val_auc" in out + err, out + err


def test_tune_info_lines_are_held_back_where_ray_logs_info() -> None:
    """In a Ray actor the ``ray.tune`` logger is at INFO (a family's Tune run when families run at once):
    its "Wrote the latest version of all result files" lines must not reach the job's terminal, while
    warnings still do and the level comes back afterwards. Fails if quiet_libraries leaves ray.tune alone."""
    import logging

    from dvt_search.runtime.console import quiet_libraries

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    parent, child = logging.getLogger("ray.tune"), logging.getLogger("ray.tune.tune")
    handler, before = Keep(), parent.level
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    try:
        with quiet_libraries():
            child.info("Wrote the latest version of all result files")
            child.warning("a trial failed")
        child.info("after")
    finally:
        parent.removeHandler(handler)
        parent.setLevel(before)
    assert seen == ["a trial failed", "after"]
