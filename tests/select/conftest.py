"""Fixtures for the select tests: synthetic run directories (real RunDir/TrialRecord files, no search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dvt_search.data.spec import InputSpec
from dvt_search.rundir import BudgetConfig, DataConfig, RunConfig, RunDir, RunInfo, TrialRecord


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


@pytest.fixture()
def run_factory():
    """:func:`make_run` and :func:`trial` for building synthetic run directories."""
    return make_run, trial


# ------------------------------------------------------------------ a real, tiny, selected run
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


@pytest.fixture(scope="session")
def selected_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A phantom dataset, a run directory with really trained tiny models, and its selection.

    vgg16 (one trained trial + one failed), multitask_unet (one trained, one stopped without checkpoint),
    sift_bow_svm (one trained) and patch_resnet50 (no trial at all); Optuna journal with a few trials each.
    """
    import torch

    from dvt_search.data.dataset import SliceDataset, build_datasets, spec_for
    from dvt_search.data.phantom import generate
    from dvt_search.data.schema import read_manifest
    from dvt_search.data.splits import make_splits, manifest_fingerprint
    from dvt_search.families.base import FitData
    from dvt_search.selection.run import select_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("selected")
    manifest = generate(
        root / "data", patients=8, seed=1, size=64, slices_per_scan=6, preset="easy", iliac_fraction=0.0
    )
    df = read_manifest(manifest)
    splits = make_splits(df, seed=0)
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


@pytest.fixture(scope="session")
def exported(selected_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vgg16 and sift_bow_svm winners of :func:`selected_run` exported."""
    from dvt_search.deploy.export import export_run

    out = tmp_path_factory.mktemp("export")
    dirs = export_run(selected_run["run"].path, out, families=["vgg16", "sift_bow_svm"])
    assert sorted(d.name for d in dirs) == ["sift_bow_svm", "vgg16"]
    return out
