"""Tests of the SIFT-BoW-SVM baseline family and its descriptor cache (tiny real data, no mocks)."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.svm import SVC

from dvt_search.families import sift_features as sf
from dvt_search.families.base import DataSpec, EpochReport, FitData, FitError
from dvt_search.families.sift_bow_svm import (
    SiftBowSvm,
    SiftBowSvmModel,
    SvmArrays,
    bow_histograms,
    normalize,
)

SPEC = DataSpec(image_size=64)


def make_slices(n: int, seed: int, size: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    """Smooth CT-like slices with a soft blob; odd indices (positives) also hold a textured square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for i in range(n):
        img = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 4) * 60 + 100
        cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
        img += 60 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 10) ** 2))
        if i % 2:
            s = size // 5
            oy, ox = rng.integers(2, size - s - 2, 2)
            cells = rng.integers(0, 2, (s // 3 + 1, s // 3 + 1)).repeat(3, 0).repeat(3, 1)
            img[oy : oy + s, ox : ox + s] = 40 + 160 * cells[:s, :s]
        images.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
        labels.append(i % 2)
    return images, np.asarray(labels)


class ArrayDataset:
    """The slice of the SliceDataset contract that the SIFT family uses."""

    def __init__(self, images: list[np.ndarray], labels: np.ndarray, key: str) -> None:
        self.images, self.labels, self.key = images, labels, key

    @property
    def cache_key(self) -> str:
        return self.key

    def __len__(self) -> int:
        return len(self.images)

    def window_u8(self, i: int) -> np.ndarray:
        return self.images[i]


def easy_data(n_train: int = 40, n_val: int = 20, tag: str = "") -> tuple[ArrayDataset, ArrayDataset]:
    return (
        ArrayDataset(*make_slices(n_train, 0), key=f"train{tag}"),
        ArrayDataset(*make_slices(n_val, 1), key=f"val{tag}"),
    )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sf.CACHE_ENV, str(tmp_path / "default-cache"))
    sf.clear_memory_cache()


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in (cache_dir / "sift").iterdir() if p.is_dir())


def test_second_fit_with_other_k_and_c_reuses_cached_descriptors(tmp_path: Path) -> None:
    train, val = easy_data()
    data = FitData(train, val, cache_dir=tmp_path)
    before = sf.STATS.extractions
    SiftBowSvm.build({"k": 8, "svm_c": 1.0}, SPEC).fit(data, 1)
    assert sf.STATS.extractions == before + 2  # train and val, once each
    entries = _entries(tmp_path)
    assert len(entries) == 2
    mtimes = [(e / "descriptors.npy").stat().st_mtime_ns for e in entries]

    sf.clear_memory_cache()  # a new trial process: only the disk cache is left
    disk = sf.STATS.disk_hits
    SiftBowSvm.build({"k": 16, "svm_c": 10.0, "svm_kernel": "linear"}, SPEC).fit(data, 1)
    assert sf.STATS.extractions == before + 2
    assert sf.STATS.disk_hits == disk + 2
    assert [(e / "descriptors.npy").stat().st_mtime_ns for e in _entries(tmp_path)] == mtimes

    memory = sf.STATS.memory_hits
    SiftBowSvm.build({"k": 12, "svm_c": 0.1, "max_descriptors_for_kmeans": 100}, SPEC).fit(data, 1)  # LRU
    assert sf.STATS.memory_hits == memory + 2
    assert sf.STATS.extractions == before + 2


def test_cache_key_depends_on_sift_settings_and_dataset_only() -> None:
    a = ArrayDataset(*make_slices(4, 0), key="a")
    b = ArrayDataset(*make_slices(4, 0), key="b")
    base = sf.SiftParams()
    key = sf.descriptor_cache_key(a, base)
    assert sf.descriptor_cache_key(b, base) != key
    assert sf.descriptor_cache_key(a, sf.SiftParams(contrast_threshold=0.02)) != key
    assert sf.descriptor_cache_key(a, sf.SiftParams(sigma=1.2)) != key
    assert sf.descriptor_cache_key(a, sf.SiftParams(dense=True)) != key
    assert sf.descriptor_cache_key(a, sf.SiftParams(dense_step=8)) == key  # irrelevant without dense
    dense = sf.SiftParams(dense=True)
    assert sf.descriptor_cache_key(a, sf.SiftParams(dense=True, nfeatures=50)) == sf.descriptor_cache_key(
        a, dense
    )
    assert sf.descriptor_cache_key(a, sf.SiftParams(dense=True, dense_step=8)) != sf.descriptor_cache_key(
        a, dense
    )
    family = SiftBowSvm.resolve_params({"k": 500, "svm_c": 3.0, "sift_sigma": 1.6})
    assert sf.descriptor_cache_key(a, sf.SiftParams.from_family_params(family)) == key
    with pytest.raises(TypeError, match="cache_key"):
        sf.descriptor_cache_key(object(), base)  # type: ignore[arg-type]


def _extract_in_child(cache_dir: str, queue: mp.Queue) -> None:
    ds = ArrayDataset(*make_slices(24, 5), key="concurrent")
    desc, offsets = sf.extract_descriptors(ds, sf.SiftParams(), cache_dir)
    queue.put((sf.STATS.extractions, np.asarray(desc).tobytes(), offsets.tolist()))


def test_concurrent_processes_share_one_complete_entry(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_extract_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(r[0] for r in results) == 1  # the lock made the second process wait and read
    assert results[0][1:] == results[1][1:]
    leftovers = [p.name for p in (tmp_path / "sift").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []
    (entry,) = _entries(tmp_path)
    offsets = np.load(entry / "offsets.npy", allow_pickle=False)
    desc = np.load(entry / "descriptors.npy", allow_pickle=False)
    assert offsets[-1] == len(desc) and offsets.tolist() == results[0][2]


def test_racing_writers_keep_the_first_complete_entry(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    offsets = np.array([0, 1], np.int64)
    first = np.full((1, 128), 7, np.uint8)
    sf._publish(entry, first, offsets, {"writer": 1})
    sf._publish(entry, first.copy(), offsets, {"writer": 2})  # loses the rename race: no error
    assert json.loads((entry / "meta.json").read_text()) == {"writer": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_corrupt_entry_is_reported_with_its_path(tmp_path: Path) -> None:
    ds = ArrayDataset(*make_slices(4, 0), key="corrupt")
    sf.extract_descriptors(ds, sf.SiftParams(), tmp_path)
    sf.clear_memory_cache()
    (entry,) = _entries(tmp_path)
    np.save(entry / "offsets.npy", np.array([0, 1], np.int64))
    with pytest.raises(sf.SiftCacheError, match=str(entry)):
        sf.extract_descriptors(ds, sf.SiftParams(), tmp_path)


def test_parallel_extraction_equals_serial_and_uncached_writes_nothing(tmp_path: Path) -> None:
    ds = ArrayDataset(*make_slices(12, 3), key="parallel")
    serial = sf.extract_descriptors(ds, sf.SiftParams(), tmp_path / "unused", use_cache=False)
    parallel = sf.extract_descriptors(ds, sf.SiftParams(), tmp_path, n_jobs=2)
    assert not (tmp_path / "unused").exists()
    np.testing.assert_array_equal(serial[0], parallel[0])
    np.testing.assert_array_equal(serial[1], parallel[1])


def test_descriptors_are_opencv_values_stored_losslessly_as_uint8() -> None:
    image = make_slices(2, 9)[0][1]
    _, reference = cv2.SIFT_create().detectAndCompute(image, None)
    ours = sf.extract_slice(image, sf.SiftParams())
    assert ours.dtype == np.uint8 and len(ours) == len(reference) > 0
    np.testing.assert_array_equal(ours.astype(np.float32), reference)
    dense = sf.extract_slice(image, sf.SiftParams(dense=True, dense_step=16))
    assert dense.shape == (16, 128)  # a 4x4 grid on 64x64


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_numpy_decision_function_equals_sklearn(kernel: str) -> None:
    rng = np.random.default_rng(0)
    x = normalize(rng.poisson(2.0, (80, 12)), "l1")
    y = (x[:, 0] + 0.1 * rng.normal(size=80) > np.median(x[:, 0])).astype(int)
    svc = SVC(C=3.0, kernel=kernel, gamma=7.5).fit(x, y)
    x_new = normalize(rng.poisson(2.0, (50, 12)), "l1")
    ours = SvmArrays.from_sklearn(svc, 7.5).decision_function(x_new)
    np.testing.assert_allclose(ours, svc.decision_function(x_new), rtol=0, atol=1e-9)


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    train, val = easy_data()
    model = SiftBowSvm.build({"k": 10, "norm": "hellinger", "class_weight": "balanced"}, SPEC)
    model.fit(FitData(train, val, cache_dir=tmp_path / "cache"), 1)
    expected = model.predict(val)
    out = model.save(tmp_path / "ckpt")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["centers.npy", "meta.json", "svm.npz"]
    np.load(out / "centers.npy", allow_pickle=False)
    with np.load(out / "svm.npz", allow_pickle=False) as z:
        assert all(z[name].dtype != object for name in z.files)
    loaded = SiftBowSvm.load(out)
    assert isinstance(loaded, SiftBowSvmModel) and loaded.params == model.params
    assert loaded.history[0].metrics == pytest.approx(model.history[0].metrics)
    np.testing.assert_array_equal(loaded.predict(val), expected)
    assert expected.dtype == np.float64 and expected.shape == (len(val),)
    assert ((expected >= 0) & (expected <= 1)).all()


def test_slices_without_keypoints_get_empty_histograms(tmp_path: Path) -> None:
    images, labels = make_slices(20, 0)
    images[0] = np.zeros((64, 64), np.uint8)
    images[3] = np.full((64, 64), 128, np.uint8)
    train = ArrayDataset(images, labels, key="with-blank")
    desc, offsets = sf.extract_descriptors(train, sf.SiftParams(), tmp_path)
    assert offsets[1] == offsets[0] and offsets[4] == offsets[3]
    rng = np.random.default_rng(0)
    hist = bow_histograms(desc, offsets, rng.uniform(0, 50, (5, 128)).astype(np.float32), "l1")
    assert (hist[[0, 3]] == 0).all() and np.allclose(hist[offsets[1:] > offsets[:-1]].sum(1), 1.0)
    model = SiftBowSvm.build({"k": 5}, SPEC)
    model.fit(FitData(train, train, cache_dir=tmp_path), 1)
    assert model.history[0].metrics["n_empty_slices"] >= 2
    blank = ArrayDataset([np.zeros((64, 64), np.uint8)] * 3, np.zeros(3, int), key="all-blank")
    scores = model.predict(blank)
    assert scores.shape == (3,) and np.isfinite(scores).all() and np.ptp(scores) < 1e-12


def test_learns_textured_blobs_in_one_reported_epoch(tmp_path: Path) -> None:
    train, val = easy_data()
    reports: list[EpochReport] = []
    model = SiftBowSvm.build({"k": 10}, SPEC)
    out = model.fit(FitData(train, val, cache_dir=tmp_path), 5, lambda r, m: reports.append(r))
    assert out == reports and len(reports) == 1 and reports[0].epoch == 1
    metrics = reports[0].metrics
    assert set(metrics) >= {"val_auc", "train_auc", "n_descriptors", "wall_s"}
    assert metrics["val_auc"] > 0.7
    assert model.fit(FitData(train, val, cache_dir=tmp_path), 5, lambda r, m: reports.append(r)) == []
    assert len(reports) == 1 and model.epochs_done == 1


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    train, val = easy_data(n_train=6, n_val=4, tag="-small")
    with pytest.raises(KeyError, match="no_such_knob"):
        SiftBowSvm.build({"no_such_knob": 1}, SPEC)
    with pytest.raises(ValueError, match="svm_kernel"):
        SiftBowSvm.build({"svm_kernel": "poly"}, SPEC)
    with pytest.raises(ValueError, match="sigma"):
        SiftBowSvm.build({"sift_sigma": 0.0}, SPEC)
    with pytest.raises(FitError, match="visual words"):
        SiftBowSvm.build({"k": 10_000}, SPEC).fit(FitData(train, val, cache_dir=tmp_path), 1)
    one_class = ArrayDataset(train.images, np.zeros(len(train), int), key="one-class")
    with pytest.raises(FitError, match="only class"):
        SiftBowSvm.build({"k": 5}, SPEC).fit(FitData(one_class, val, cache_dir=tmp_path), 1)
    with pytest.raises(RuntimeError, match="not fitted"):
        SiftBowSvm.build({}, SPEC).predict(val)


def test_phantom_slice_dataset_end_to_end(phantom_data, tmp_path: Path) -> None:
    from dvt_search.data.dataset import SliceDataset
    from dvt_search.data.schema import manifest_root, read_manifest

    manifest = phantom_data(patients=3, seed=0, size=64, slices_per_scan=6, preset="easy").manifest
    frame, root = read_manifest(manifest), manifest_root(manifest)
    last = sorted(frame["patient_id"].unique())[-1]
    train = SliceDataset(frame[frame["patient_id"] != last], root, size=64)
    val = SliceDataset(frame[frame["patient_id"] == last], root, size=64)
    assert set(train.labels.tolist()) == {0, 1}
    model = SiftBowSvm.build({"k": 8, "svm_kernel": "linear"}, SPEC)
    (report,) = model.fit(FitData(train, val, cache_dir=tmp_path / "cache"), 1)
    assert 0.0 <= report.metrics["val_auc"] <= 1.0 and report.metrics["n_descriptors"] >= 8
    entries = {p.name for p in _entries(tmp_path / "cache")}
    assert sf.descriptor_cache_key(train, sf.SiftParams()) in entries

    sf.clear_memory_cache()  # a fresh SliceDataset over the same rows (another process) hits the disk cache
    extractions = sf.STATS.extractions
    again = SliceDataset(frame[frame["patient_id"] == last], root, size=64)
    loaded = SiftBowSvm.load(model.save(tmp_path / "ckpt"))
    loaded.cache_dir = tmp_path / "cache"
    np.testing.assert_array_equal(loaded.predict(again), model.predict(val))
    assert sf.STATS.extractions == extractions


def test_search_space_file_names_real_knobs_with_numeric_bounds() -> None:
    import yaml

    path = Path(__file__).resolve().parents[2] / "search_spaces" / SiftBowSvm.search_space_file()
    space = yaml.safe_load(path.read_text())
    assert space["family"] == SiftBowSvm.name
    defaults = SiftBowSvm.default_params()
    for name, dist in {**space["params"], **space["fixed"]}.items():
        assert name in defaults, name
        if isinstance(dist, dict) and dist.get("type") in ("int", "float"):
            assert isinstance(dist["low"], (int, float)) and isinstance(dist["high"], (int, float)), name
            assert dist["low"] < dist["high"], name
