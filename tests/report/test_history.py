"""Optuna journal reading: history per family and importances with their fallbacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from dvt_search.report.history import read_history, running_best


def _journal(path: Path, n: dict[str, int]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path)))
    rng = np.random.default_rng(0)
    for fam, count in n.items():
        study = optuna.create_study(study_name=fam, storage=storage, direction="maximize")
        dists = {
            "lr": FloatDistribution(1e-5, 1e-1, log=True),
            "noise": FloatDistribution(0, 1),
            "opt": CategoricalDistribution(["adam", "sgd"]),
        }
        for _ in range(count):
            p = {
                "lr": float(10 ** rng.uniform(-5, -1)),
                "noise": float(rng.uniform()),
                "opt": str(rng.choice(["adam", "sgd"])),
            }
            value = -abs(np.log10(p["lr"]) + 3) + 0.01 * p["noise"]  # lr matters, noise barely
            study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=value))
        study.add_trial(
            optuna.trial.create_trial(params={}, distributions={}, state=optuna.trial.TrialState.FAIL)
        )


def test_history_and_importances(tmp_path: Path) -> None:
    _journal(tmp_path / "optuna.journal", {"vgg16": 20, "sift_bow_svm": 4, "densenet161": 2})
    before = (tmp_path / "optuna.journal").read_bytes()
    h = read_history(tmp_path)
    assert (tmp_path / "optuna.journal").read_bytes() == before  # read from a copy, never touched
    assert set(h) == {"vgg16", "sift_bow_svm", "densenet161"}
    v = h["vgg16"]
    assert len(v.trials) == 20 and v.direction == "maximize"  # the failed trial is left out
    assert v.importance_method.startswith("fANOVA")
    assert max(v.importances, key=v.importances.get) == "lr"
    s = h["sift_bow_svm"]
    assert "Spearman" in s.importance_method and sum(s.importances.values()) == pytest.approx(1.0)
    d = h["densenet161"]
    assert d.importances == {} and "too few" in d.importance_method


def test_no_journal(tmp_path: Path) -> None:
    assert read_history(tmp_path) == {}


def test_running_best() -> None:
    np.testing.assert_array_equal(
        running_best(np.array([0.5, 0.4, 0.7, 0.6]), "maximize"), [0.5, 0.5, 0.7, 0.7]
    )
    np.testing.assert_array_equal(running_best(np.array([3.0, 4.0, 1.0]), "minimize"), [3.0, 3.0, 1.0])


def test_torn_journal_is_read_from_a_repaired_copy_and_said(tmp_path: Path, caplog) -> None:
    import logging

    journal = tmp_path / "optuna.journal"
    _journal(journal, {"vgg16": 5})
    with journal.open("ab") as f:
        f.write(b'{"op_code": 4, "worker_id": "x", "trial_id"\n')  # a record cut by a killed writer
    torn = journal.read_bytes()
    with caplog.at_level(logging.WARNING, logger="dvt_search.rundir.journal"):
        history = read_history(tmp_path)
    assert len(history["vgg16"].trials) == 5
    assert journal.read_bytes() == torn  # the run's own file is not touched by the report
    assert [p.name for p in tmp_path.iterdir()] == ["optuna.journal"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(journal) in line and "byte(s)" in line


def test_spearman_importance_codes_string_dtype_categoricals() -> None:
    """A categorical held as a pandas string column (what a ``schedule: step/cosine/none`` study gives)."""
    import pandas as pd

    from dvt_search.report.history import _spearman_importance

    trials = pd.DataFrame(
        {
            "value": [0.5, 0.6, 0.7, 0.8],
            "params_schedule": pd.Series(["none", "none", "step", "step"], dtype="string"),
            "params_lr": [1e-4, 1e-3, 1e-2, 1e-1],
        }
    )
    imp = _spearman_importance(trials)
    assert set(imp) == {"schedule", "lr"} and abs(sum(imp.values()) - 1.0) < 1e-9
