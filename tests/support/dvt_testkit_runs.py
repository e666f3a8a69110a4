"""Run directories for the selection, report and deploy tests (real RunDir/TrialRecord files).

:func:`make_run` / :func:`trial` write synthetic run directories (no search, no training);
:func:`build_selected_run` trains tiny real models on a phantom and selects them. The root
``conftest.py`` exposes them as the fixtures ``run_factory``, ``selected_run`` and ``exported``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dvt_testkit_phantom import PhantomData

from dvt_search.data.spec import InputSpec
from dvt_search.rundir import BudgetConfig, DataConfig, RunConfig, RunDir, RunInfo, TrialRecord

#: ``generate`` arguments of the phantom behind :func:`build_selected_run`.
SELECTED_RUN_PHANTOM = {
    "patients": 8,
    "seed": 1,
    "size": 64,
    "slices_per_scan": 6,
    "preset": "easy",
    "iliac_fraction": 0.0,
}


def make_run(path: Path, families: list[str], trials: list[dict[str, Any]], **info: Any) -> RunDir:
    """Write ``run.json`` and one trial per dict (keys: TrialRecord fields + ``curve`` + ``ckpt``).

    ``curve`` is a list of per-epoch val_auc values (metrics.jsonl); ``ckpt`` writes a stub checkpoint
    directory holding ``meta.json`` (optionally with ``n_params``).
    """
    run = RunDir(path)
    config = RunConfig(families=tuple(families), data=DataConfig(manifest=""), budget=BudgetConfig(4, 3))
    run.write_info(RunInfo(run_name=path.name, config=config, **info))
    for t in trials:
        t = dict(t)
        curve = t.pop("curve", [])
        ckpt = t.pop("ckpt", None)
        rec = TrialRecord(**t)
        for e, v in enumerate(curve, start=1):
            run.append_epoch(rec.family, rec.trial_id, {"epoch": e, "val_auc": v, "train_loss": 1.0 / e})
        if ckpt is not None:
            d = run.checkpoint_dir(rec.family, rec.trial_id)
            d.mkdir(parents=True)
            (d / "meta.json").write_text(json.dumps({"family": rec.family, **ckpt}))
            rec.has_checkpoint = True
        run.write_trial(rec)
    return run


def trial(family: str, tid: str, auc: float | None, **kw: Any) -> dict[str, Any]:
    """A finished trial with ``best.val_auc = auc`` and a checkpoint unless told otherwise."""
    d: dict[str, Any] = {
        "trial_id": tid,
        "family": family,
        "params": {"lr": 1e-3, "depth": 2},
        "status": "completed",
        "epochs": 3,
        "max_epochs": 3,
        "best_epoch": 3,
        "best": {} if auc is None else {"val_auc": auc, "val_loss": 0.5},
        "last": {} if auc is None else {"val_auc": auc, "val_loss": 0.5},
        "cpu_s": 10.0,
        "gpu_s": 0.0,
        "wall_s": 12.0,
        "curve": [] if auc is None else [auc - 0.1, auc - 0.05, auc],
        "ckpt": {},
    }
    d.update(kw)
    return d


SIZE = 32  # network input of the tiny CNNs
FAMILIES = ["sift_bow_svm", "vgg16", "multitask_unet", "patch_resnet50"]


def _optuna_journal(path: Path, trials: dict[str, list[tuple[dict[str, float], float]]]) -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path)))
    for family, rows in trials.items():
        study = optuna.create_study(study_name=family, storage=storage, direction="maximize")
        for params, value in rows:
            dists = {k: FloatDistribution(1e-5, 1.0, log=True) for k in params}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))


def _train(run: RunDir, family: str, tid: str, params: dict[str, Any], data: Any, spec: Any) -> TrialRecord:
    from dvt_search.families import get

    model = get(family).build(params, spec)
    model.fit(data, 1)
    for r in model.history:
        run.append_epoch(family, tid, {"epoch": r.epoch, **r.metrics})
    model.save(run.checkpoint_dir(family, tid))
    m = model.history[-1].metrics
    rec = TrialRecord(
        trial_id=tid,
        family=family,
        params=params,
        status="completed",
        epochs=1,
        max_epochs=1,
        best_epoch=1,
        best=m,
        last=m,
        wall_s=m.get("wall_s", 1.0),
        cpu_s=m.get("wall_s", 1.0),
        has_checkpoint=True,
        optuna_number=0,
    )
    run.write_trial(rec)
    return rec


def build_selected_run(root: Path, phantom: PhantomData) -> dict[str, Any]:
    """A run directory under ``root`` with really trained tiny models on ``phantom``, and its selection.

    vgg16 (one trained trial + one failed), multitask_unet (one trained, one stopped without checkpoint),
    sift_bow_svm (one trained) and patch_resnet50 (no trial at all); Optuna journal with a few trials each.
    """
    import torch

    from dvt_search.data.dataset import SliceDataset, build_datasets, spec_for
    from dvt_search.data.splits import manifest_fingerprint
    from dvt_search.families.base import FitData
    from dvt_search.selection.run import select_run

    torch.set_num_threads(1)
    manifest, df = phantom.manifest, phantom.frame
    splits = phantom.splits(seed=0)
    run = RunDir(root / "run")
    splits.save(run.path / "splits.json")
    run.write_info(
        RunInfo(
            run_name="tiny",
            config=RunConfig(
                families=tuple(FAMILIES),
                data=DataConfig(manifest=str(manifest), input=InputSpec(image_size=SIZE)),
                budget=BudgetConfig(trials_per_family=2, max_epochs=1),
            ),
            manifest_fingerprint=manifest_fingerprint(df),
            splits_hash=splits.hash,
        )
    )
    cache = root / "cache"
    for size, fams in ((SIZE, ("vgg16", "multitask_unet")), (64, ("sift_bow_svm",))):
        ds = build_datasets(manifest, run.path / "splits.json", size=size)
        small = SliceDataset(ds["train"].frame.iloc[::4], ds["train"].root, size=size)
        data = FitData(small, ds["val"], cache_dir=cache)
        spec = spec_for(small)
        for fam in fams:
            params = {"k": 8} if fam == "sift_bow_svm" else {"batch_size": 8, "seed": 0}
            if fam == "vgg16":
                params.update(head="gap", batch_norm=True)
            _train(run, fam, f"{fam[:4]}_0", params, data, spec)
    run.write_trial(TrialRecord("vgg1_1", "vgg16", {"lr": 0.1}, status="failed", error="FitError: NaN loss"))
    stopped = TrialRecord("mult_1", "multitask_unet", {"lr": 0.01}, status="stopped", epochs=2, max_epochs=4)
    for e in (1, 2):
        run.append_epoch(
            "multitask_unet",
            "mult_1",
            {
                "epoch": e,
                "val_auc": 0.5,
                "train_loss_cls": 0.7 / e,
                "train_loss_pix": 0.3 / e,
                "train_loss_dice": 0.9 / e,
            },
        )
    run.write_trial(stopped)
    _optuna_journal(
        run.path / "optuna.journal",
        {
            f: [({"lr": 10 ** -(i + 1), "wd": 10 ** -(5 - i)}, 0.5 + 0.05 * i) for i in range(4)]
            for f in FAMILIES[:3]
        },
    )
    selection = select_run(run.path, n_resamples=2000, seed=0)
    return {"root": root, "run": run, "manifest": manifest, "selection": selection, "cache": cache}
