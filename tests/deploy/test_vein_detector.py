"""The vein detector of an exported model in the scope check: a tiny trained multitask UNet finds veins on
held-out phantom thighs and none on a chest; families without a detector are not asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dvt_testkit_scope import chest_slice, volume

from dvt_search.cli import main
from dvt_search.data.phantom import export_scan_dicom
from dvt_search.deploy.predict import Exported
from dvt_search.deploy.preprocess import preprocess_spec
from dvt_search.deploy.scope import MIN_VEIN_MM2
from dvt_search.families import get

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")]

SIZE = 64
#: the family tests' phantom (shared through the session cache): femoral level only, easy preset
PHANTOM = {
    "patients": 8,
    "seed": 0,
    "size": SIZE,
    "slices_per_scan": 12,
    "preset": "easy",
    "iliac_fraction": 0.0,
}
#: a segmentation-weighted tiny training (classification a = 0.1; pixel BCE 3/4, Dice 1/4; vein pixels
#: weighted 2x): six epochs on a quarter of the training slices find 170-490 mm2 of vein on the phantom's
#: thighs (two femoral veins are ~170 mm2) and none on the synthetic chest. Heavier vein weights or fewer
#: epochs over- or under-segment at 64^2
PARAMS = {
    "batch_size": 4,
    "seed": 0,
    "step_gamma": 1.0,
    "lr": 3e-3,
    "a": 0.1,
    "b": 0.75,
    "w0": 2.0,
    "w1": 1.0,
}
EPOCHS = 6
VEIN_WARNING = "vein detector finds (almost) no vein"


def write_export(model, out: Path) -> Path:  # noqa: ANN001
    """An export folder of ``model`` through the family's hooks: checkpoint less training-only files,
    ``Model.export`` artefacts, ``preprocess.json``, an operating threshold and ``export.json``."""
    ckpt = model.save(out.parent / f"{out.name}_ckpt")
    out.mkdir()
    for f in ckpt.iterdir():
        if f.name not in model.training_only_files:
            shutil.copy2(f, out / f.name)
    info = {"family": model.family, "kind": get(model.family).kind, **model.export(out)}
    (out / "export.json").write_text(json.dumps(info, default=float))
    (out / "preprocess.json").write_text(json.dumps(preprocess_spec(model)))
    (out / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    return out


@pytest.fixture(scope="module")
def unet_export(phantom_data, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from dvt_search.data.dataset import SliceDataset, spec_for
    from dvt_search.families.base import FitData

    data = phantom_data(**PHANTOM)
    splits = data.splits(seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = SliceDataset(splits.select(data.frame, "train").iloc[::4], data.root, size=SIZE)
        val = SliceDataset(splits.select(data.frame, "val").iloc[::8], data.root, size=SIZE)
        model = get("multitask_unet").build(PARAMS, spec_for(train))
        model.fit(FitData(train, val), EPOCHS)
        out = write_export(model, tmp_path_factory.mktemp("unet") / "multitask_unet")
    finally:
        torch.set_num_threads(threads)
    test_scans = sorted(splits.select(data.frame, "test")["scan_id"].unique())
    return out, model, data, test_scans


def _write_nifti(vol: np.ndarray, mm: float, path: Path) -> None:
    import nibabel as nib

    xyz = np.ascontiguousarray(vol.transpose(2, 1, 0)[::-1, ::-1, :]).astype(np.int16)  # RAS storage
    nib.save(nib.Nifti1Image(xyz, np.diag([mm, mm, 5.0, 1.0])), str(path))


def test_batch_warns_on_the_chest_and_not_on_phantom_thighs(unet_export, tmp_path, capsys) -> None:
    out, _, data, scans = unet_export
    studies = tmp_path / "studies"
    for k, scan in enumerate(scans[:3]):
        export_scan_dicom(data.manifest, scan, studies / f"thigh_{k}")
    chest, mm = volume(chest_slice, n=6, size=SIZE)
    _write_nifti(chest, mm, studies / "chest.nii.gz")
    wl = tmp_path / "wl"
    assert main(["predict", "--model", str(out), "--batch", str(studies), "--out", str(wl)]) == 0
    printed = capsys.readouterr().out
    df = pd.read_parquet(wl / "worklist.parquet").set_index("series_key")
    assert (df["error"] == "").all(), df["error"].tolist()
    for key in ("thigh_0", "thigh_1", "thigh_2"):
        scope = json.loads((wl / df.loc[key, "output"] / "summary.json").read_text())["scope"]
        assert scope["vein_detector"] == "asked"
        assert scope["median_vein_area_mm2"] >= MIN_VEIN_MM2, (key, scope)
        assert VEIN_WARNING not in df.loc[key, "warnings"], (key, df.loc[key, "warnings"])
        assert df.loc[key, "in_scope"], df.loc[key, "warnings"]
    summary = json.loads((wl / df.loc["chest.nii.gz", "output"] / "summary.json").read_text())
    assert summary["scope"]["slices_without_veins"] == summary["scope"]["vein_slices_measured"] == 6
    assert any(VEIN_WARNING in w for w in summary["warnings"])
    assert VEIN_WARNING in df.loc["chest.nii.gz", "warnings"] and not df.loc["chest.nii.gz", "in_scope"]
    assert VEIN_WARNING in printed


def test_vein_fractions_are_the_eager_segmentation_head(unet_export) -> None:
    """The scorer asks the exported weights, in eval mode, at probability 0.5 of the segmentation head."""
    from dvt_search.data import transform
    from dvt_search.data.io import load_slice
    from dvt_search.data.schema import resolve

    out, model, data, scans = unet_export
    rows = data.frame[data.frame["scan_id"] == scans[0]].head(3)
    chest, _ = volume(chest_slice, n=2, size=SIZE)
    slices = [load_slice(resolve(data.root, r.image_path), int(r.image_index)) for r in rows.itertuples()]
    slices += list(chest)
    x = torch.from_numpy(np.stack([transform.network_input(s, SIZE, model.spec.windows) for s in slices]))
    model.module.eval()
    with torch.no_grad():
        expected = (torch.sigmoid(model.module(x)["seg"][:, 0]) >= 0.5).flatten(1).double().mean(1).numpy()
    got = Exported.open(out).vein_fractions(slices)
    assert got.shape == (len(slices),) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert got[:3].min() > 0 and got[3:].max() == 0  # veins in the thigh, none in the chest


@pytest.mark.parametrize("family", ["vgg16", "sift_bow_svm"])
def test_families_without_a_detector_are_not_asked(family, exported, tmp_path) -> None:
    chest, mm = volume(chest_slice, n=3, size=SIZE)
    assert Exported.open(exported / family).vein_fractions(list(chest)) is None
    nifti = tmp_path / "chest.nii.gz"
    _write_nifti(chest, mm, nifti)
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(exported / family), "--nifti", str(nifti), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scope"]["vein_detector"].startswith("none")
    assert not summary["in_scope"]  # the image statistics still see the chest
    assert not any(VEIN_WARNING in w for w in summary["warnings"])


def test_patch_grid_fractions_come_from_the_vein_head(tmp_path) -> None:
    """An untrained patch ResNet-50 at 64^2 (a 2 x 2 grid): fractions are its vein cells, not its DVT cells."""
    from dvt_search.data import transform
    from dvt_search.data.spec import DataSpec

    torch.set_num_threads(1)
    model = get("patch_resnet50").build({"seed": 0}, DataSpec(image_size=SIZE))
    with torch.no_grad():  # make the two heads disagree: vein cells all on, DVT evidence all off
        model.module.vein_head.bias.fill_(30.0)
        model.module.dvt_head.bias.fill_(-30.0)
    scorer = get("patch_resnet50").open_export(write_export(model, tmp_path / "patch"), model.spec)
    chest, _ = volume(chest_slice, n=2, size=SIZE)
    got = scorer.vein_fractions(list(chest))
    np.testing.assert_array_equal(got, [1.0, 1.0])
    x = torch.from_numpy(np.stack([transform.network_input(s, SIZE, model.spec.windows) for s in chest]))
    assert tuple(model.module.eval()(x)["vein"].shape) == (2, 2, 2)
