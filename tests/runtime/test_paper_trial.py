"""The paper trial (enqueued first, once), per-family sampler seeds, and ASHA never stopping the paper trial."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import dvt_test_plugins  # noqa: F401  (registers the test families)
import optuna
import pytest
from ray.tune.schedulers import TrialScheduler

from dvt_search.runtime.searcher import PAPER_ATTR, OptunaStudySearcher, family_seed, open_study
from dvt_search.runtime.tuning import PaperExemptASHA
from dvt_search.search.space import load_family_space, parse_space

REPO_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
SPACE = {"family": "scripted", "params": {"quality": {"type": "float", "low": 0.0, "high": 1.0}}}


def _searcher(journal: Path, space, n: int = 4, **kw) -> OptunaStudySearcher:
    return OptunaStudySearcher(space, journal, num_samples=n, budget=3, **kw)


def test_paper_configuration_is_the_first_trial_with_values_outside_the_space_run_as_given(tmp_path) -> None:
    space = load_family_space(REPO_SPACES, "vgg16")
    s = _searcher(tmp_path / "j", space)
    first, second = s.suggest("a"), s.suggest("b")
    assert first["paper_config"] is True and first["optuna_number"] == 0
    assert first["paper_outside_space"] == ["weight_decay"]
    p = first["params"]
    assert (p["lr"], p["batch_size"], p["schedule"], p["step_gamma"], p["dropout"]) == (
        1e-3,
        10,
        "step",
        0.1,
        0.5,
    )
    assert p["weight_decay"] == 0.0  # the paper's value, although the log-scale space cannot hold it
    assert "paper_config" not in second and second["params"] != p
    trial0 = open_study(tmp_path / "j", "vgg16").trials[0]
    assert trial0.user_attrs[PAPER_ATTR] is True
    assert "weight_decay" not in trial0.params and trial0.params["lr"] == 1e-3  # Optuna holds what it can


@pytest.mark.parametrize("n", [1, 2])
def test_the_enqueued_paper_trial_counts_as_one_of_the_samples(tmp_path, n: int) -> None:
    """A study of n samples runs exactly n trials, the paper trial first (n = 1: only it)."""
    s = _searcher(tmp_path / "j", parse_space(SPACE), n=n)
    configs = [s.suggest(f"t{i}") for i in range(n + 1)]
    assert configs[0]["paper_config"] is True
    assert all(isinstance(c, dict) for c in configs[:n]) and configs[n] == s.FINISHED
    assert len(open_study(tmp_path / "j", "scripted").trials) == n


def test_resume_never_enqueues_the_paper_trial_twice(tmp_path) -> None:
    journal = tmp_path / "j"
    s = _searcher(journal, parse_space(SPACE), n=5)
    s.suggest("a")
    s.on_trial_complete("a", {"epoch": 3, "val_auc": 0.5})
    again = _searcher(journal, parse_space(SPACE), n=5)  # a resumed driver opens the same study
    configs = [again.suggest(t) for t in "bcd"]
    assert not any(c.get("paper_config") for c in configs)
    study = open_study(journal, "scripted")
    assert [t.user_attrs.get(PAPER_ATTR, False) for t in study.trials] == [True, False, False, False]


def test_a_paper_trial_left_running_is_reused_as_the_paper_trial(tmp_path) -> None:
    journal = tmp_path / "j"
    space = load_family_space(REPO_SPACES, "sift_bow_svm")
    s = _searcher(journal, space)
    orphan = s.suggest("a")  # the driver dies before Tune's snapshot knew "a"
    restored = _searcher(journal, space)
    again = restored.suggest("b")
    assert again == orphan and again["params"]["svm_gamma"] == "scale"


def test_studies_without_a_paper_trial_on_request_or_when_already_started(tmp_path) -> None:
    off = _searcher(tmp_path / "off", parse_space(SPACE), paper_trial=False)
    assert "paper_config" not in off.suggest("a")
    journal = tmp_path / "old"
    old = open_study(journal, "scripted")
    old.add_trial(
        optuna.trial.create_trial(
            params={"quality": 0.9},
            distributions={"quality": optuna.distributions.FloatDistribution(0.0, 1.0)},
            value=0.9,
        )
    )
    s = _searcher(journal, parse_space(SPACE))
    assert "paper_config" not in s.suggest("b")  # a study started before this feature gets none


def test_family_seeds_are_deterministic_and_differ_between_families(tmp_path) -> None:
    assert family_seed(0, "vgg16") == family_seed(0, "vgg16")
    seeds = {family_seed(s, f) for s in (0, 1) for f in ("vgg16", "densenet161", "multitask_unet")}
    assert len(seeds) == 6 and all(0 <= x < 2**32 for x in seeds)
    # VGG-16 and DenseNet-161 share lr / weight decay / batch size: with one run seed they used to draw the
    # same configurations; now each family draws its own, and the same family draws the same again.
    shared = {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [8, 10, 16, 32]},
    }

    def draws(family: str, where: str) -> list[dict]:
        s = _searcher(
            tmp_path / where, parse_space({"family": family, "params": shared}), n=4, paper_trial=False
        )
        return [s.suggest(str(i))["params"] for i in range(4)]

    assert draws("vgg16", "a") == draws("vgg16", "b")
    assert draws("vgg16", "c") != draws("densenet161", "d")
    study = open_study(tmp_path / "a", "vgg16")
    assert study.user_attrs["sampler_seed"] == family_seed(0, "vgg16")


def _trial(tid: str, paper: bool = False) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, config={"paper_config": True} if paper else {})


def test_asha_never_stops_the_paper_trial_early_but_stops_the_others() -> None:
    sched = PaperExemptASHA(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    sched.set_search_properties("val_auc", "max")
    trials = [_trial("good"), _trial("paper", paper=True), _trial("weak")]
    for t in trials:
        sched.on_trial_add(None, t)
    res = {"good": 0.9, "paper": 0.1, "weak": 0.1}
    acts = {
        t.trial_id: sched.on_trial_result(None, t, {"epoch": 1, "val_auc": res[t.trial_id]}) for t in trials
    }
    assert acts == {"good": "CONTINUE", "paper": "CONTINUE", "weak": "STOP"}
    # ... and at the budget it stops like any trial
    assert sched.on_trial_result(None, trials[1], {"epoch": 4, "val_auc": 0.1}) == TrialScheduler.STOP
