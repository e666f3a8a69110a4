"""A CUDA out-of-memory error fails the trial at once: recorded ``failed`` with a message naming family,
batch size, image size and measured need, FAIL in Optuna, never retried by ``--max-failures``.

On the CPU the error is real: the ``tiny_cnn_oom`` plug-in family's training forward raises
``torch.OutOfMemoryError`` in its second epoch (after one epoch reported a value, so the searcher must
tell FAIL, not PRUNED). ``--gpus-per-trial auto`` on a cluster without GPUs is a clear error before any
run directory is written.
"""

from __future__ import annotations

import optuna
import pytest
import torch
from dvt_test_plugins import read_attempts
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir import RunDir
from dvt_search.runtime.failures import OOM_TAG, fatal_error, oom_message, oom_text
from dvt_search.runtime.options import RunError


def test_oom_message_names_the_configuration_and_is_found_in_a_train_error() -> None:
    err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    text = oom_message("multitask_unet", 32, 512, 0.25, int(21.5 * 1024**3), err)
    assert text.startswith(OOM_TAG) and "multitask_unet at batch size 32, 512x512 input" in text
    assert "holding 0.25 GPU" in text and "measured need 21.50 GiB" in text
    assert "Tried to allocate 2.00 GiB" in text and "more detail" not in text and "Not retried" in text
    assert "not measured" in oom_message("vgg16", 8, 256, 1.0, None, err)
    worker = f"[Rank 0]\nTraceback (most recent call last):\n  ...\nRuntimeError: {text}\n"
    assert oom_text(RuntimeError(worker)) == text
    assert oom_text(RuntimeError("CUDA error: an illegal memory access")) is None
    assert fatal_error({"oom_error": text, "val_auc": float("nan")}) == text
    assert fatal_error({"val_auc": 0.7}) is None


@pytest.mark.ray
@pytest.mark.slow
def test_an_oom_trial_fails_once_not_retried_and_is_fail_in_optuna(ray_2_cpus, phantom, tmp_path) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    state = tmp_path / "state"
    fixed = {"batch_size": 4, "state_dir": str(state), "oom_after_epochs": 1}
    spaces = write_spaces(tmp_path / "spaces", {"tiny_cnn_oom": {"fixed": fixed}})
    opts = SearchOptions(
        manifest=phantom, storage=tmp_path / "runs", name="oom", families=["tiny_cnn_oom"], trials=1,
        max_epochs=3, size=32, space_dir=spaces, plugins=[PLUGIN], max_failures=2, scheduler="fifo",
        progress_every_s=1e9, include_dashboard=False,
        resident_budget_gb=1.0,  # the trial trains from resident slices (run.json -> FitData -> fit)
    )  # fmt: skip
    best = run_search(opts)
    run = RunDir(tmp_path / "runs" / "oom")
    assert run.read_info().config.resources.resident_budget_gb == 1.0
    (rec,) = run.trials("tiny_cnn_oom")
    assert rec.status == "failed" and rec.failures == 1 and rec.epochs == 1
    assert rec.error.startswith(OOM_TAG), rec.error
    assert "tiny_cnn_oom at batch size 4, 32x32 input" in rec.error and "need not measured" in rec.error
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in rec.error
    assert [tid for tid, _, _ in read_attempts(state)] == [rec.trial_id]  # one attempt: max_failures unused
    assert best["tiny_cnn_oom"] is None
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run.journal)))
    (trial,) = optuna.load_study(study_name="tiny_cnn_oom", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.intermediate_values  # epoch 1 had a value


@pytest.mark.ray
def test_gpus_auto_on_a_cluster_without_gpus_is_a_clear_error(ray_2_cpus, phantom, tmp_path) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    opts = SearchOptions(
        manifest=phantom, storage=tmp_path / "runs", name="auto", families=["tiny_cnn"], trials=1,
        max_epochs=1, size=32, space_dir=write_spaces(tmp_path / "spaces", {"tiny_cnn": {}}),
        plugins=[PLUGIN], gpus_per_trial="auto", include_dashboard=False,
    )  # fmt: skip
    with pytest.raises(RunError, match="--gpus-per-trial auto measures GPU memory on a GPU node") as exc:
        run_search(opts)
    assert "no node type has a GPU" in str(exc.value) and "nodes alive now" in str(exc.value)
    assert not (tmp_path / "runs" / "auto").exists()
