"""A tiny real search of the vein cascade: trials finish, and no paper trial is enqueued (not in the paper)."""

from __future__ import annotations

import optuna
import pytest
import torch
from dvt_testkit_runtime import write_spaces

from dvt_search import families
from dvt_search.data.dataset import build_datasets
from dvt_search.rundir.layout import RunDir
from dvt_search.runtime.searcher import PAPER_ATTR

SPACES = {
    "vein_cascade": {
        "params": {
            "lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
            "context_slices": {"type": "int", "low": 0, "high": 1},
        },
        "fixed": {"batch_size": 8, "stage1_size": 32, "width": 8, "crop_size": 8},
    }
}


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_cascade_search_has_no_paper_trial(ray_2_cpus, phantom, tmp_path, capsys) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    torch.set_num_threads(1)
    opts = SearchOptions(
        manifest=phantom,
        storage=tmp_path / "runs",
        name="cascade",
        families=["vein_cascade"],
        trials=2,
        max_epochs=1,
        size=32,
        space_dir=write_spaces(tmp_path / "spaces", SPACES),
        progress_every_s=1e9,
        include_dashboard=False,
    )
    best = run_search(opts)
    assert "best vein_cascade: trial" in capsys.readouterr().out
    run = RunDir(tmp_path / "runs" / "cascade")
    records = run.trials("vein_cascade")
    assert len(records) == 2
    assert all(r.status == "completed" and r.has_checkpoint and not r.paper_config for r in records)
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run.path / "optuna.journal"))
    )
    study = optuna.load_study(study_name="vein_cascade", storage=journal)
    assert len(study.trials) == 2 and not any(t.user_attrs.get(PAPER_ATTR) for t in study.trials)
    model = families.get("vein_cascade").load(
        run.checkpoint_dir("vein_cascade", best["vein_cascade"].trial_id)
    )
    assert model.spec.image_size == 64  # crops read at the store's 64^2, not the run's 32^2
    val = build_datasets(phantom, run.path / "splits.json", size=32)["val"]
    scores = model.predict(val)
    assert scores.shape == (len(val),) and ((scores >= 0) & (scores <= 1)).all()
