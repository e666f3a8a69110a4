"""Per-family input end to end: one run, two families at their own sizes (one with ±2 context slices),
selected, exported and run on a DICOM series, without a search (the trials are trained here for real).

vgg16 takes ``input_size: 32, context_slices: 2`` and multitask_unet ``input_size: 64`` in a run whose
``--size`` is 48 (neither family's size), on a phantom stored at 64^2.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from dvt_search import families
from dvt_search.cli import main
from dvt_search.data.dataset import SliceDataset, build_datasets, spec_at_input, spec_for
from dvt_search.data.phantom import export_scan_dicom
from dvt_search.data.spec import InputSpec
from dvt_search.data.splits import manifest_fingerprint
from dvt_search.families.base import FitData
from dvt_search.rundir import BudgetConfig, DataConfig, RunConfig, RunDir, RunInfo, TrialRecord

pytestmark = pytest.mark.slow

RUN_SIZE = 48
PARAMS: dict[str, dict[str, Any]] = {
    "vgg16": {"head": "gap", "batch_norm": True, "batch_size": 8, "input_size": 32, "context_slices": 2},
    "multitask_unet": {"batch_size": 8, "input_size": 64},
}


def _trial(run: RunDir, family: str, params: dict[str, Any], data: FitData, run_spec: Any) -> None:
    fam = families.get(family)
    model = fam.build(params, spec_at_input(fam.model_spec(params, run_spec), data.train))
    model.fit(data, 1)
    tid = f"{family[:4]}_0"
    for r in model.history:
        run.append_epoch(family, tid, {"epoch": r.epoch, **r.metrics})
    model.save(run.checkpoint_dir(family, tid))
    m = model.history[-1].metrics
    run.write_trial(
        TrialRecord(
            trial_id=tid,
            family=family,
            params=params,
            status="completed",
            epochs=1,
            max_epochs=1,
            best_epoch=1,
            best=m,
            last=m,
            wall_s=1.0,
            cpu_s=1.0,
            has_checkpoint=True,
            optuna_number=0,
        )
    )


@pytest.fixture(scope="module")
def exported_run(phantom_data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from dvt_search.deploy.export import export_run
    from dvt_search.selection.run import select_run

    torch.set_num_threads(1)
    data = phantom_data(patients=8, seed=1, size=64, slices_per_scan=6, preset="easy", iliac_fraction=0.0)
    root = tmp_path_factory.mktemp("inputs")
    splits = data.splits(seed=0)
    run = RunDir(root / "run")
    splits.save(run.splits_file)
    run.write_info(
        RunInfo(
            run_name="inputs",
            config=RunConfig(
                families=tuple(PARAMS),
                data=DataConfig(manifest=str(data.manifest), input=InputSpec(image_size=RUN_SIZE)),
                budget=BudgetConfig(trials_per_family=1, max_epochs=1),
            ),
            manifest_fingerprint=manifest_fingerprint(data.frame),
            splits_hash=splits.hash,
        )
    )
    ds = build_datasets(data.manifest, run.splits_file, size=RUN_SIZE)
    small = SliceDataset(ds["train"].frame.iloc[::3], ds["train"].root, size=RUN_SIZE)
    fit = FitData(small, ds["val"])
    for fam, params in PARAMS.items():
        _trial(run, fam, params, fit, spec_for(small))
    select_run(run.path, n_resamples=200, seed=0)
    out = root / "export"
    export_run(run.path, out)
    return {"run": run, "export": out, "manifest": data.manifest, "small": small}


def test_each_family_keeps_its_own_input_through_export(exported_run) -> None:
    """Checkpoint, preprocess.json and the TorchScript graph all carry each family's own size and context.

    Catches: an export that writes the run's size (48) or drops the context (a deployed vgg16 would be fed
    one slice of 48^2 instead of five of 32^2), and a vein fraction left at the run's size.
    """
    small = exported_run["small"]
    for fam, size, k in (("vgg16", 32, 2), ("multitask_unet", 64, 0)):
        pre = json.loads((exported_run["export"] / fam / "preprocess.json").read_text())
        assert pre["resize"]["size"] == size and pre["context"]["context_slices"] == k
        assert pre["channels"] == 2 * k + 1
        meta = json.loads((exported_run["export"] / fam / "meta.json").read_text())
        assert meta["spec"]["image_size"] == size and meta["spec"]["context_slices"] == k
        want = spec_for(small.with_input(size=size)).vein_fraction
        assert meta["spec"]["vein_fraction"] == pytest.approx(want)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            ts = torch.jit.load(str(exported_run["export"] / fam / "model.ts"))
        assert ts(torch.rand(2, 2 * k + 1, size, size)).shape == (2,)


def test_predict_dicom_with_context_matches_model_predict(exported_run, tmp_path) -> None:
    """``predict --dicom`` of a test scan gives the selection's test scores (``Model.predict`` on the
    manifest rows) for the k = 2 model and for the 64^2 one.

    Catches: deployed context taken from the scorer's batch rather than the whole volume, neighbours in
    another order than training's, the edge rule differing between ``neighbour_rows`` (training) and
    ``volume_neighbours`` (deployment), and an export scored at the run's size.
    """
    run = exported_run["run"]
    preds = pd.read_parquet(run.path / "test_predictions.parquet")
    scan = sorted(preds["scan_id"].unique())[0]
    series = tmp_path / "series"
    export_scan_dicom(exported_run["manifest"], scan, series)
    for fam in PARAMS:
        out = tmp_path / fam
        args = [
            "predict",
            "--model",
            str(exported_run["export"] / fam),
            "--dicom",
            str(series),
            "--out",
            str(out),
        ]
        assert main([*args, "--batch-size", "4"]) == 0
        table = pd.read_csv(out / "slices.csv")
        expected = preds[(preds["family"] == fam) & (preds["scan_id"] == scan)].sort_values("slice_index")
        assert len(table) == len(expected) >= 5
        got = table.set_index("slice_index").loc[expected["slice_index"], "probability"].to_numpy()
        np.testing.assert_allclose(got, expected["score"].to_numpy(), atol=2e-6)  # csv keeps 6 decimals
        summary = json.loads((out / "summary.json").read_text())
        assert len(summary["heatmaps"]) == int(table["positive"].sum())


def test_context_scores_are_not_single_slice_scores(exported_run) -> None:
    """The k = 2 export scores a volume differently from the same slices one by one (each its own
    one-slice volume). Catches: a scorer that ignores the volume and repeats each slice as its context."""
    from dvt_search.deploy.predict import Exported

    model = Exported.open(exported_run["export"] / "vgg16")
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 200, size=(6, 64, 64)).astype(np.float32)
    whole = model.scores(volume, batch_size=2)
    alone = np.concatenate([model.scores(volume[i : i + 1]) for i in range(len(volume))])
    assert whole.shape == alone.shape == (6,)
    assert not np.allclose(whole, alone, atol=1e-6)
