"""The vein cascade: predicted candidates only at inference, native centred crops, context, round trips.

Real torch on the tiny easy phantom of ``tests/families/conftest.py`` (64^2 store) and on synthetic tensors
whose answer is known by construction.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dvt_search import families
from dvt_search.data.context import neighbour_rows
from dvt_search.data.dataset import SliceDataset, spec_for
from dvt_search.data.io import clear_cache, load_slice
from dvt_search.data.schema import resolve
from dvt_search.families.base import FitData
from dvt_search.families.cascade_data import NativeSlices, volume_stacks
from dvt_search.families.cascade_parts import (
    CascadeNet,
    crop_at,
    find_candidates,
    pool_logits,
    to_native,
    vein_support,
)
from dvt_search.search.space import load_space

REPO = Path(__file__).resolve().parents[2]
FAMILY = families.get("vein_cascade")
#: small and fast; k = 1 so that context matters
KNOBS = {
    "context_slices": 1,
    "stage1_size": 32,
    "crop_size": 12,
    "depth": 2,
    "width": 8,
    "batch_size": 8,
    "lr": 3e-3,
    "candidates": 4,
}


def _net(**kw) -> CascadeNet:
    args = dict(
        windows=1,
        context=1,
        stage1_size=32,
        crop_size=9,
        candidates=3,
        vein_threshold=0.5,
        depth=1,
        width=4,
        dropout=0.0,
        pooling="max",
        empty_logit=-4.0,
    )
    args.update(kw)
    return CascadeNet(**args).eval()


# ------------------------------------------------------------------ tensor steps with known answers
def test_candidates_are_the_local_maxima_ranked_by_mass() -> None:
    prob = torch.zeros(1, 32, 32)
    prob[0, 5:8, 20:23] = 0.9  # big blob: centre (6, 21)
    prob[0, 25, 4] = 0.8  # one-pixel blob
    prob[0, 15, 15] = 0.3  # below half the slice's peak
    ys, xs, valid = find_candidates(vein_support(prob, 0.5), 3, nms=5)
    assert valid.tolist() == [[True, True, False]]
    assert (int(ys[0, 0]), int(xs[0, 0])) == (6, 21)
    assert (int(ys[0, 1]), int(xs[0, 1])) == (25, 4)
    # relative to the slice's peak: a weak but well-ranked stage 1 still proposes its maxima
    _, _, weak = find_candidates(vein_support(prob * 0.1, 0.5), 3, nms=5)
    assert weak.tolist() == [[True, True, False]]
    _, _, none = find_candidates(vein_support(prob * 0.001, 0.5), 3, nms=5)  # nothing looks like vein
    assert not none.any()


def test_crops_are_centred_at_native_resolution() -> None:
    stack = torch.zeros(1, 2, 128, 128)
    stack[0, 0, 37, 90] = 5.0  # a marker pixel in channel 0
    stack[0, 1] = (
        (torch.arange(128)[:, None] + torch.arange(128)[None, :]).remainder(2).float()
    )  # 1-px checks
    crop = crop_at(stack, torch.tensor([[37, 2]]), torch.tensor([[90, 3]]), 9)
    assert crop.shape == (2, 2, 9, 9)
    assert float(crop[0, 0, 4, 4]) == 5.0 and float(crop[0, 0].sum()) == 5.0
    assert torch.equal(crop[0, 1], stack[0, 1, 33:42, 86:95])  # exact native pixels, nothing resampled
    assert float(crop[1, 1, :2].abs().sum()) == 0.0  # above the slice: zero padding
    assert torch.equal(to_native(torch.tensor([0, 31]), 32, 128), torch.tensor([2, 126]))


def test_the_model_crops_the_native_stack_around_its_candidates() -> None:
    """Candidates at a known stage-1 pixel -> stage 2 sees the native pixels around its native centre."""
    net = _net()
    x = torch.rand(1, 3, 128, 128)
    x[0, 1, 34, 82] = 7.0  # centre slice marker at the native pixel under stage-1 pixel (8, 20)
    veins = torch.zeros(1, 32, 32)
    veins[0, 8, 20] = 1.0
    seen: list[torch.Tensor] = []
    net.stage2.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach()))
    out = net(x, veins=veins)
    assert (int(out["cy"][0, 0]), int(out["cx"][0, 0])) == (34, 82) and bool(out["valid"][0, 0])
    crops = seen[0]
    assert crops.shape == (3, 4, 9, 9)  # 3 candidates, 3 context channels + the vein probability
    assert torch.equal(crops[0, :3], x[0, :, 30:39, 78:87]) and float(crops[0, 1, 4, 4]) == 7.0


def test_pooling_ignores_invalid_slots_and_scores_empty_slices_low() -> None:
    logits = torch.tensor([[2.0, -1.0, 9.0], [0.5, 0.5, 0.5]])
    valid = torch.tensor([[True, True, False], [False, False, False]])
    for how in ("max", "lse", "noisy_or"):
        pooled = pool_logits(logits, valid, how, -4.0)
        assert float(pooled[1]) == -4.0 and float(pooled[0]) < 9.0
    assert float(pool_logits(logits, valid, "max", -4.0)[0]) == 2.0
    p = torch.sigmoid(torch.tensor([2.0, -1.0]))
    noisy = 1 - (1 - p).prod()
    assert float(torch.sigmoid(pool_logits(logits, valid, "noisy_or", -4.0)[0])) == pytest.approx(
        float(noisy)
    )


# ------------------------------------------------------------------ context
def _scan_rows(dataset: SliceDataset) -> pd.DataFrame:
    f = dataset.frame
    return f[f["scan_id"] == f["scan_id"].iloc[0]].sort_values("slice_index")


def test_context_channels_are_the_same_scans_neighbours(phantom) -> None:
    manifest, frame = phantom
    ds = SliceDataset(frame, manifest.parent, size=32)  # the run's network size does not matter: native reads
    df = ds.frame
    native = NativeSlices(ds, 64, ds.windows, 2)
    nb = neighbour_rows(df["scan_id"].to_numpy(), df["slice_index"].to_numpy(), 2)
    rows = _scan_rows(ds).index.to_numpy()
    stacks = native.stacks(rows[[0, 3]])
    assert stacks.shape == (2, 5, 64, 64)
    for i, r in enumerate(rows[[0, 3]]):
        for j in range(5):
            np.testing.assert_array_equal(stacks[i, j], native.windowed(int(nb[r, j]))[0])
    np.testing.assert_array_equal(stacks[0, 0], stacks[0, 2])  # the scan's first slice repeats at its edge
    assert not np.array_equal(stacks[1, 0], stacks[1, 2])
    # a deployed volume gets the same stacks
    volume = np.stack(
        [
            load_slice(resolve(manifest.parent, p), int(i))
            for p, i in zip(df.loc[rows, "image_path"], df.loc[rows, "image_index"])
        ]
    )
    np.testing.assert_array_equal(volume_stacks(volume, 64, ds.windows, 2)[[0, 3]], stacks)


# ------------------------------------------------------------------ a trained model
@pytest.fixture(scope="module")
def scans(phantom, splits):
    """Whole scans (train: 3 patients' worth of slices; val: one patient's scans), at the run size 32."""
    manifest, df = phantom
    train = splits.select(df, "train")
    val = splits.select(df, "val")
    keep = train["patient_id"].isin(sorted(train["patient_id"].unique())[:3])
    vkeep = val["patient_id"] == sorted(val["patient_id"].unique())[0]
    tr = SliceDataset(train[keep], manifest.parent, size=32)
    va = SliceDataset(val[vkeep], manifest.parent, size=32)
    return tr, va


@pytest.fixture(scope="module")
def trained(scans):
    tr, va = scans
    model = FAMILY.build(KNOBS, spec_for(tr))
    reports = model.fit(FitData(train=tr, val=va), 2)
    return model, reports


def test_fit_reports_both_stages_and_reads_at_native_size(trained) -> None:
    model, reports = trained
    assert [r.epoch for r in reports] == [1, 2]
    m = reports[-1].metrics
    for key in (
        "train_loss_seg_bce",
        "train_loss_seg_dice",
        "train_loss_cls",
        "val_auc",
        "val_dice",
        "val_loss",
    ):
        assert np.isfinite(m[key]), key
    assert model.spec.image_size == 64  # the store's side, not the run's network size of 32
    assert model.preprocess_notes()["vein_cascade"]["native_size"] == 64


def _garbage_mask_copy(dataset: SliceDataset, root: Path) -> SliceDataset:
    """The dataset's files copied under ``root`` with every mask replaced by random noise."""
    rng = np.random.default_rng(0)
    for rel in sorted(set(dataset.frame["image_path"]) | set(dataset.frame["mask_path"])):
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(resolve(dataset.root, rel), dst)
    for rel in sorted(set(dataset.frame["mask_path"])):
        mask = np.load(root / rel)
        np.save(root / rel, (rng.random(mask.shape) < 0.5).astype(mask.dtype))
    clear_cache()
    return SliceDataset(dataset.frame, root, size=dataset.size)


def test_inference_candidates_come_from_stage_one_never_from_the_masks(trained, scans, tmp_path) -> None:
    model, _ = trained
    _, va = scans
    scores = model.predict(va)
    assert np.ptp(scores) > 0, "stage 1 found no candidate: the test would be vacuous"
    garbage = _garbage_mask_copy(va, tmp_path)
    np.testing.assert_array_equal(model.predict(garbage), scores)
    # ... while training candidates do follow the masks given to the forward pass
    net = model.module.eval()
    x = torch.from_numpy(model._native(va).stacks(np.arange(4)))
    veins = torch.zeros(4, net.stage1_size, net.stage1_size)
    veins[:, 3, 5] = 1.0
    with torch.no_grad():
        forced = net(x, veins=veins)
    assert forced["valid"][:, 0].all()
    assert (forced["cy"][:, 0] == int(to_native(torch.tensor(3), net.stage1_size, 64))).all()


def test_save_load_predict_and_export_score_alike(trained, scans, tmp_path) -> None:
    model, _ = trained
    _, va = scans
    ckpt = model.save(tmp_path / "ckpt")
    loaded = FAMILY.load(ckpt)
    assert loaded.spec == model.spec and loaded.epochs_done == 2
    rows = _scan_rows(va)
    one_scan = SliceDataset(rows, va.root, size=32)
    expected = model.predict(one_scan)
    np.testing.assert_array_equal(loaded.predict(one_scan), expected)
    out = tmp_path / "export"
    out.mkdir()
    for f in ckpt.iterdir():
        if f.name not in model.training_only_files:
            shutil.copy2(f, out / f.name)
    info = model.export(out)
    assert info["torchscript"]["max_abs_diff"] <= 1e-4
    scorer = FAMILY.open_export(out, model.spec)
    volume = np.stack(
        [load_slice(resolve(va.root, r.image_path), int(r.image_index)) for r in rows.itertuples()]
    )
    np.testing.assert_allclose(scorer.scores(volume, batch_size=3), expected, rtol=0, atol=1e-5)
    maps = scorer.heatmaps([volume[1], volume[2]])
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    with torch.no_grad():
        direct = model.module.eval()(torch.from_numpy(model._native(one_scan).stacks(np.array([1]))))
    prob = torch.sigmoid(direct["crop_logit"][0, direct["valid"][0]])
    if len(prob):  # the evidence map holds the crops' probabilities, at their native centres
        y, x = int(direct["cy"][0, 0]), int(direct["cx"][0, 0])
        assert maps[0, y, x] >= float(prob[0]) - 1e-6
    veins = scorer.vein_fractions(list(volume[:3]))
    assert veins.shape == (3,) and np.all((veins >= 0) & (veins <= 1))


def test_bad_knobs_name_the_knob(tiny) -> None:
    with pytest.raises(ValueError, match="stage1_size"):
        FAMILY.build({"stage1_size": 30}, tiny[2])
    with pytest.raises(ValueError, match="pooling"):
        FAMILY.build({"pooling": "mean"}, tiny[2])
    with pytest.raises(ValueError, match="context_slices"):
        FAMILY.build({"context_slices": -1}, tiny[2])


def test_search_space_names_real_knobs_and_has_no_paper_trial() -> None:
    space = load_space(REPO / "search_spaces" / "vein_cascade.yaml", family="vein_cascade")
    names = {p.name for p in space.params}
    wanted = {
        "crop_size",
        "context_slices",
        "depth",
        "candidates",
        "vein_threshold",
        "seg_bce_weight",
        "seg_dice_weight",
        "pos_weight",
        "lr",
        "schedule",
        "step_gamma",
        "cosine_eta_min",
    }
    assert wanted <= names <= set(FAMILY.default_params())
    assert FAMILY.paper_configuration is False


def test_grad_cam_of_the_report_explains_the_cascade(trained, scans) -> None:
    """The report's error cases run Grad-CAM on the network with single-slice images at the model's size."""
    from dvt_search.engine.cam import grad_cam

    model, _ = trained
    _, va = scans
    ds = SliceDataset(va.frame, va.root, size=model.spec.image_size)
    images = torch.stack([ds[i]["image"] for i in range(3)])
    maps = grad_cam(model.module, images)
    assert maps.shape == (3, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_predict_scores_a_series_with_crop_evidence_heat_maps(trained, scans, tmp_path) -> None:
    """``dvt-search predict``'s path on an export folder of the cascade: scores, heat maps, summary."""
    import json

    from dvt_search.deploy.inputs import SeriesInput
    from dvt_search.deploy.predict import Exported, predict_input
    from dvt_search.deploy.preprocess import preprocess_spec

    model, _ = trained
    _, va = scans
    out = tmp_path / "export"
    ckpt = model.save(tmp_path / "ckpt")
    out.mkdir()
    for f in ckpt.iterdir():
        if f.name not in model.training_only_files:
            shutil.copy2(f, out / f.name)
    model.export(out)
    (out / "export.json").write_text(json.dumps({"family": "vein_cascade", "kind": "torch"}))
    (out / "preprocess.json").write_text(json.dumps(preprocess_spec(model)))
    (out / "threshold.json").write_text(json.dumps({"threshold": 0.0}))  # every slice positive: all get maps
    rows = _scan_rows(va)
    volume = np.stack(
        [load_slice(resolve(va.root, r.image_path), int(r.image_index)) for r in rows.itertuples()]
    ).astype(np.float32)
    series = SeriesInput("s", volume, (6.0, 6.0), "CT", True, "nifti")
    summary = predict_input(Exported.open(out), series, tmp_path / "pred")
    expected = model.predict(SliceDataset(rows, va.root, size=32))
    written = pd.read_csv(tmp_path / "pred" / "slices.csv")["probability"].to_numpy()
    np.testing.assert_allclose(written, expected, atol=1e-5)
    assert len(summary["heatmaps"]) == len(rows) and "crop evidence" in summary["heatmap_method"]
    assert (tmp_path / "pred" / summary["heatmaps"][0]).is_file()
