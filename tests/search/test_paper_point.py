"""The paper configuration as seen by a search space: what Optuna can be told, what it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvt_search import families
from dvt_search.search.space import ParamSpec, load_family_space, paper_point, parse_space

REPO_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        (
            ParamSpec("x", "float", low=1e-6, high=1e-2, log=True),
            [1e-3, 1e-6, 1e-2],
            [0.0, 0.02, "scale", None],
        ),
        (ParamSpec("x", "float", low=0.0, high=0.5, step=0.05), [0.0, 0.2, 0.45], [0.22, 0.55]),
        (ParamSpec("x", "int", low=1, high=5), [1, 3, 5, 3.0], [0, 6, 2.5, True]),
        (ParamSpec("x", "int", low=0, high=10, step=2), [0, 4, 10], [3]),
        (ParamSpec("x", "categorical", choices=(8, 10, 16)), [10], [12, 10.5, "10"]),
        (ParamSpec("x", "categorical", choices=(False, True)), [False], [0, 1, "false"]),
        (ParamSpec("x", "categorical", choices=(0.02, 0.04)), [0.04], [0.03]),
    ],
)
def test_contains_neither_clamps_nor_coerces(spec: ParamSpec, inside: list, outside: list) -> None:
    assert all(spec.contains(v) for v in inside), inside
    assert not any(spec.contains(v) for v in outside), outside


def test_vgg16_paper_point_runs_the_paper_values_and_names_what_the_space_cannot_hold() -> None:
    space = load_family_space(REPO_SPACES, "vgg16")
    point = paper_point(space)
    defaults = families.get("vgg16").default_params()
    # Adam lr 1e-3, batch 10, lr / 10 after every epoch (step schedule, size 1, gamma 0.1): paper 5.2
    assert point.in_space["lr"] == 1e-3 and point.in_space["batch_size"] == 10
    assert (point.in_space["schedule"], point.in_space["step_size"], point.in_space["step_gamma"]) == (
        "step",
        1,
        0.1,
    )
    assert point.outside == {"weight_decay": 0.0}  # log-scale range [1e-6, 1e-2] cannot hold 0
    assert "cosine_eta_min" not in point.params  # inactive under schedule: step
    for name, value in point.params.items():
        assert value == defaults[name], name
    assert point.params["head"] == "classifier"  # `fixed` applies to the paper trial too


def test_sift_and_multitask_values_outside_their_spaces() -> None:
    sift = paper_point(load_family_space(REPO_SPACES, "sift_bow_svm"))
    assert sift.in_space["k"] == 100 and sift.in_space["svm_kernel"] == "rbf"
    assert sift.outside == {"svm_gamma": "scale"}  # active (rbf) but not a float
    mt = paper_point(load_family_space(REPO_SPACES, "multitask_unet"))
    assert (mt.in_space["a"], mt.in_space["b"]) == (0.5, 0.25)  # eq. 4
    assert mt.outside == {"weight_decay": 0.0, "w0": None, "w1": None}


def test_conditional_params_follow_the_paper_values() -> None:
    space = parse_space(
        {
            "family": "vgg16",
            "params": {
                "schedule": {"type": "categorical", "choices": ["cosine", "step"]},
                "cosine_eta_min": {"type": "float", "low": 0.0, "high": 0.1, "when": {"schedule": "cosine"}},
                "step_size": {"type": "int", "low": 2, "high": 5, "when": {"schedule": "step"}},
            },
        }
    )
    point = paper_point(space)
    assert point.in_space == {"schedule": "step"}
    assert point.outside == {"step_size": 1}  # the paper decays every epoch; the space starts at 2
    assert "cosine_eta_min" not in point.params
