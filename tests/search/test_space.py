"""Search-space files: validation errors name file and key; define-by-run suggestion honours conditions."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from dvt_search import families
from dvt_search.rundir import RunDir
from dvt_search.search.space import (
    SearchSpaceError,
    load_family_space,
    load_snapshot,
    load_space,
    parse_space,
    space_to_doc,
    suggest,
    write_snapshot,
)

REPO_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"

VALID = """\
# a comment that the snapshot keeps
family: vgg16
params:
  lr: {type: float, low: 1e-5, high: 1.0e-2, log: true}
  batch_size: {type: int, low: 4, high: 32, step: 4}
  head: {type: categorical, choices: [classifier, gap]}
  dropout: {type: float, low: 0.0, high: 0.5, step: 0.1, when: {head: classifier}}
  weight_decay: {type: float, low: 1.0e-6, high: 1.0e-3, log: true, when: {head: [classifier, gap], dropout: [0.1, 0.2]}}
fixed:
  schedule: cosine
"""


def write(tmp_path: Path, text: str, name: str = "vgg16.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_space_parses_every_field(tmp_path) -> None:
    space = load_space(write(tmp_path, VALID), family="vgg16")
    lr, bs, head, dropout, wd = space.params
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 1e-5, 1e-2, True)  # "1e-5" read as a number
    assert (bs.type, bs.low, bs.high, bs.step) == ("int", 4, 32, 4)
    assert head.choices == ("classifier", "gap")
    assert dropout.when == {"head": ("classifier",)} and space.conditional
    assert wd.when == {"head": ("classifier", "gap"), "dropout": (0.1, 0.2)}
    assert space.fixed == {"schedule": "cosine"}
    assert isinstance(lr.distribution(), optuna.distributions.FloatDistribution)
    assert bs.distribution() == optuna.distributions.IntDistribution(4, 32, step=4)


BAD = [
    ("family: nope\nparams: {}\n", "family", "unknown family 'nope'"),
    ("family: densenet161\nparams: {}\n", "family", "declares 'densenet161'"),
    ("family: vgg16\nparams:\n  lr: {type: float, low: 0.1, high: 0.1}\n", "params.lr.low", "must be < high"),
    (
        "family: vgg16\nparams:\n  lr: {type: float, low: 0.0, high: 1.0, log: true}\n",
        "params.lr.low",
        "> 0 when log",
    ),
    (
        "family: vgg16\nparams:\n  lr: {type: uniform, low: 0.1, high: 1.0}\n",
        "params.lr.type",
        "unknown distribution type",
    ),
    (
        "family: vgg16\nparams:\n  learning_rate: {type: float, low: 0.1, high: 1.0}\n",
        "params.learning_rate",
        "unknown parameter",
    ),
    ("family: vgg16\nfixed: {nesterov: true}\n", "fixed.nesterov", "unknown parameter"),
    (
        "family: vgg16\nparams:\n  lr: {type: float, low: 0.1, high: 1.0, q: 0.1}\n",
        "params.lr.q",
        "unknown field",
    ),
    (
        "family: vgg16\nparams:\n  head: {type: categorical, choices: [gap], low: 1}\n",
        "params.head.low",
        "unknown field",
    ),
    (
        "family: vgg16\nparams:\n  dropout: {type: float, low: 0.0, high: 0.5, when: {usedrop: true}}\n",
        "params.dropout.when.usedrop",
        "unknown param",
    ),
    (
        "family: vgg16\nparams:\n  dropout: {type: float, low: 0.0, high: 0.5, when: {head: gap}}\n"
        "  head: {type: categorical, choices: [gap, classifier]}\n",
        "params.dropout.when.head",
        "defined later",
    ),
    (
        "family: vgg16\nparams:\n  head: {type: categorical, choices: [gap]}\n"
        "  dropout: {type: float, low: 0.0, high: 0.5, when: {head: fc}}\n",
        "params.dropout.when.head",
        "not among its choices",
    ),
    (
        "family: vgg16\nparams:\n  lr: {type: float, low: small, high: 1.0}\n",
        "params.lr.low",
        "must be a number",
    ),
    (
        "family: vgg16\nparams:\n  batch_size: {type: int, low: 4.5, high: 8}\n",
        "params.batch_size.low",
        "integer",
    ),
    (
        "family: vgg16\nparams:\n  lr: {type: float, low: 0.1, high: 1.0, log: true, step: 0.1}\n",
        "params.lr.step",
        "log",
    ),
    (
        "family: vgg16\nparams:\n  head: {type: categorical, choices: []}\n",
        "params.head.choices",
        "non-empty",
    ),
    (
        "family: vgg16\nparams:\n  head: {type: categorical, choices: [[1, 2]]}\n",
        "params.head.choices[0]",
        "null, bool",
    ),
    ("family: vgg16\nparams:\n  lr: {type: float, high: 1.0}\n", "params.lr.low", "missing"),
    (
        "family: vgg16\nparams:\n  lr: {type: float, low: 0.1, high: 1.0}\nfixed: {lr: 0.01}\n",
        "fixed.lr",
        "also listed under params",
    ),
    ("family: vgg16\nsearch: {}\n", "search", "unknown top-level key"),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_invalid_spaces_name_file_and_key(tmp_path, text: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SearchSpaceError) as exc:
        load_space(path, family="vgg16")
    assert str(exc.value).startswith(f"{path}: {key}: "), str(exc.value)
    assert message in str(exc.value)


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(SearchSpaceError, match="no such search-space file"):
        load_space(tmp_path / "absent.yaml")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_space(write(tmp_path, "family: [vgg16\n"))


def test_suggest_is_define_by_run_with_conditions(tmp_path) -> None:
    space = load_space(write(tmp_path, VALID))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen_heads, seen_wd = set(), 0
    for _ in range(40):
        trial = study.ask()
        params = suggest(trial, space)
        assert params["schedule"] == "cosine"
        assert set(trial.params) == set(params) - {"schedule"}  # only active params were suggested
        assert ("dropout" in params) == (params["head"] == "classifier")
        has_wd = params.get("dropout") in (0.1, 0.2)
        assert ("weight_decay" in params) == has_wd
        seen_heads.add(params["head"])
        seen_wd += has_wd
        assert 1e-5 <= params["lr"] <= 1e-2 and params["batch_size"] % 4 == 0
        families.get("vgg16").resolve_params(params)  # every suggestion is a valid family config
        study.tell(trial, 0.5)
    assert seen_heads == {"classifier", "gap"} and seen_wd > 0


def test_re_suggesting_an_existing_trial_returns_its_params(tmp_path) -> None:
    space = load_space(write(tmp_path, VALID))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    first = study.ask()
    params = suggest(first, space)
    again = suggest(optuna.Trial(study, first._trial_id), space)
    assert again == params


def test_snapshot_round_trip_keeps_the_text(tmp_path) -> None:
    space = load_space(write(tmp_path, VALID))
    out = write_snapshot(space, RunDir(tmp_path / "run").space_file("vgg16"))
    assert out == tmp_path / "run" / "search_spaces" / "vgg16.yaml"
    assert out.read_text() == VALID
    again = load_snapshot(RunDir(tmp_path / "run").space_file("vgg16"), "vgg16")
    assert again.params == space.params and again.fixed == space.fixed
    rebuilt = parse_space(yaml.safe_load(yaml.safe_dump(space_to_doc(space), sort_keys=False)))
    assert rebuilt.params == space.params


@pytest.mark.parametrize("path", sorted(REPO_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_spaces_are_valid(path: Path) -> None:
    space = load_family_space(REPO_SPACES, path.stem)
    assert space.family == path.stem and (space.params or space.fixed)
