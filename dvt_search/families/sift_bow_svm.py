"""The paper's classical baseline (sections 4.1 and 5.1): SIFT -> k-means bag of words -> SVM.

Pipeline: OpenCV SIFT descriptors of every windowed 8-bit slice (``dataset.window_u8(i)``, cached per
dataset and SIFT settings by :mod:`dvt_search.families.sift_features`) -> ``MiniBatchKMeans`` with ``k``
visual words fit on a seeded subsample of the training descriptors -> one normalized word histogram per
slice (``l1``, ``l2`` or ``hellinger`` = square root of the l1 histogram; a slice without keypoints gets
the all-zero histogram) -> ``sklearn.svm.SVC``.

Scores: ``sigmoid(decision_function)``, a monotone map of the SVM margin into [0, 1]. They rank slices
exactly as the margin does (all the AUC objective needs) but are not calibrated probabilities; Platt
scaling was left out because sklearn fits it with an internal 5-fold cross-validation (5x the SVM cost)
and it cannot change the AUC.

Epochs: the model is fit in one go. :meth:`SiftBowSvmModel.fit` runs one "epoch" whatever ``epochs`` is
(>= 1) and calls the callback once with ``val_auc``, ``train_auc``, ``n_descriptors`` (training),
``n_empty_slices`` (training slices without keypoints), ``extract_s`` and ``wall_s``; ASHA therefore
sees a one-rung trial that it can only keep or drop.

Checkpoints hold no pickle: ``centers.npy`` (``float32[k, 128]``), ``svm.npz`` (support vectors, dual
coefficients, intercept, the numeric gamma, kernel name and class order) and ``meta.json``, written as one
directory atomically. Decision values are always computed by :class:`SvmArrays` in numpy (linear and rbf
kernels), in memory and after loading alike. The checkpoint is also the deployable model: an export adds
nothing to it, and :meth:`SiftBowSvm.open_export` scores new slices from it without the descriptor cache.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import cv2
import numpy as np
from scipy.special import expit

from ..data.transform import U8_FORMULA
from ..engine.metrics import roc_auc
from ..fsutil import atomic_directory
from . import register
from .base import META_FILE, DataSpec, EpochCallback, EpochReport, Family, FitData, FitError, Model, read_meta
from .deployed import CheckpointScorer
from .sift_features import DESCRIPTOR_DIM, SiftParams, extract_descriptors

NORMS = ("l1", "l2", "hellinger")
KERNELS = ("linear", "rbf")
CLASS_WEIGHTS = ("none", "balanced")
CENTERS_FILE = "centers.npy"
SVM_FILE = "svm.npz"
_ROWS = 16384  # descriptors per chunk when assigning words (bounded memory)
_KERNEL_ROWS = 1024  # samples per chunk when evaluating the SVM

log = logging.getLogger(__name__)


def assign_words(desc: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest center (squared Euclidean, float32) for every descriptor row."""
    c = np.asarray(centers, np.float32)
    c_sq = np.einsum("ij,ij->i", c, c)
    words = np.empty(len(desc), np.int64)
    for s in range(0, len(desc), _ROWS):
        x = np.asarray(desc[s : s + _ROWS], np.float32)
        words[s : s + len(x)] = np.argmin(c_sq[None, :] - 2.0 * (x @ c.T), axis=1)
    return words


def normalize(counts: np.ndarray, norm: str) -> np.ndarray:
    """Row-normalize word counts; all-zero rows stay zero."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    counts = np.asarray(counts, np.float64)
    if norm == "l2":
        denom = np.linalg.norm(counts, axis=1, keepdims=True)
    else:
        denom = counts.sum(axis=1, keepdims=True)
    hist = np.divide(counts, denom, out=np.zeros_like(counts), where=denom > 0)
    return np.sqrt(hist) if norm == "hellinger" else hist


def bow_histograms(desc: np.ndarray, offsets: np.ndarray, centers: np.ndarray, norm: str) -> np.ndarray:
    """``float64[n_slices, k]`` normalized bag-of-words histograms (see :func:`extract_descriptors`)."""
    n, k = len(offsets) - 1, len(centers)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    counts = np.bincount(owner * k + assign_words(desc, centers), minlength=n * k).reshape(n, k)
    return normalize(counts, norm)


@dataclass(frozen=True)
class SvmArrays:
    """A fitted binary SVC as plain arrays; ``decision_function`` > 0 means ``classes[1]``."""

    kernel: str
    gamma: float
    support_vectors: np.ndarray  # float64[m, d]
    dual_coef: np.ndarray  # float64[m]
    intercept: float
    classes: np.ndarray  # int64[2]

    @classmethod
    def from_sklearn(cls, svc: Any, gamma: float) -> SvmArrays:
        """Copy a fitted binary ``sklearn.svm.SVC`` (``gamma`` = the numeric value it was fit with)."""
        if svc.kernel not in KERNELS or len(svc.classes_) != 2:
            raise ValueError(f"only binary SVCs with kernel in {KERNELS} are supported, got {svc.kernel!r}")
        return cls(
            kernel=str(svc.kernel),
            gamma=float(gamma),
            support_vectors=np.asarray(svc.support_vectors_, np.float64),
            dual_coef=np.asarray(svc.dual_coef_, np.float64).ravel(),
            intercept=float(np.ravel(svc.intercept_)[0]),
            classes=np.asarray(svc.classes_, np.int64),
        )

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Signed margins ``sum_j dual_coef_j K(sv_j, x) + intercept`` as ``float64[n]``."""
        x = np.asarray(x, np.float64)
        sv = self.support_vectors
        if self.kernel == "linear":
            return x @ (self.dual_coef @ sv) + self.intercept
        out = np.empty(len(x), np.float64)
        sv_sq = np.einsum("ij,ij->i", sv, sv)
        for s in range(0, len(x), _KERNEL_ROWS):
            xc = x[s : s + _KERNEL_ROWS]
            sq = np.einsum("ij,ij->i", xc, xc)[:, None] + sv_sq[None, :] - 2.0 * (xc @ sv.T)
            out[s : s + len(xc)] = np.exp(-self.gamma * np.maximum(sq, 0.0)) @ self.dual_coef + self.intercept
        return out

    def save(self, fh: BinaryIO) -> None:
        """Write the arrays as an ``.npz`` (plain dtypes only: loadable with ``allow_pickle=False``)."""
        np.savez(
            fh,
            kernel=np.array(self.kernel),
            gamma=np.array(self.gamma),
            support_vectors=self.support_vectors,
            dual_coef=self.dual_coef,
            intercept=np.array(self.intercept),
            classes=self.classes,
        )

    @classmethod
    def load(cls, path: Path) -> SvmArrays:
        """Read an ``.npz`` written by :meth:`save` without unpickling anything."""
        with np.load(path, allow_pickle=False) as z:
            svm = cls(
                kernel=str(z["kernel"]),
                gamma=float(z["gamma"]),
                support_vectors=z["support_vectors"].astype(np.float64),
                dual_coef=z["dual_coef"].astype(np.float64),
                intercept=float(z["intercept"]),
                classes=z["classes"].astype(np.int64),
            )
        if svm.kernel not in KERNELS or svm.support_vectors.shape[0] != svm.dual_coef.shape[0]:
            raise ValueError(f"{path}: inconsistent SVM arrays (kernel {svm.kernel!r})")
        return svm


def _labels(dataset: Any, name: str) -> np.ndarray:
    y = np.asarray(dataset.labels)
    if y.shape != (len(dataset),) or not np.isin(y, (0, 1)).all():
        raise FitError(f"{name} labels must be {len(dataset)} values in {{0, 1}}, got shape {y.shape}")
    return y.astype(np.int64)


def _resolve_gamma(gamma: Any, x: np.ndarray) -> float:
    """sklearn's ``'scale'``/``'auto'`` rules, made explicit so the checkpoint stores a number."""
    if gamma == "auto":
        return 1.0 / x.shape[1]
    if gamma == "scale":
        var = float(x.var())
        return 1.0 / (x.shape[1] * var) if var > 0 else 1.0
    return float(gamma)


def _check_params(p: Mapping[str, Any]) -> None:
    checks = {
        "k": isinstance(p["k"], (int, np.integer)) and p["k"] >= 2,
        "kmeans_batch_size": p["kmeans_batch_size"] >= 1,
        "max_descriptors_for_kmeans": p["max_descriptors_for_kmeans"] >= 1,
        "norm": p["norm"] in NORMS,
        "svm_c": p["svm_c"] > 0,
        "svm_kernel": p["svm_kernel"] in KERNELS,
        "svm_gamma": p["svm_gamma"] in ("scale", "auto")
        if isinstance(p["svm_gamma"], str)
        else float(p["svm_gamma"]) > 0,
        "class_weight": p["class_weight"] in CLASS_WEIGHTS,
        "seed": 0 <= int(p["seed"]) < 2**32,
    }
    bad = {name: p[name] for name, ok in checks.items() if not ok}
    if bad:
        raise ValueError(f"sift_bow_svm: invalid parameter value(s) {bad}")


class SiftBowSvmModel(Model):
    """One configuration of the SIFT-BoW-SVM baseline.

    Attributes:
        cache_dir: base directory of the descriptor cache used by :meth:`predict` (set by :meth:`fit`
            from ``FitData.cache_dir``; ``None`` = the default cache directory).
        use_cache: whether :meth:`predict` reads/writes the descriptor cache.
        n_jobs: worker processes for a fresh descriptor extraction.
    """

    family: ClassVar[str] = "sift_bow_svm"

    def __init__(self, params: Mapping[str, Any], spec: DataSpec) -> None:
        super().__init__(params, spec)
        _check_params(self.params)
        self.sift = SiftParams.from_family_params(self.params)
        self.centers: np.ndarray | None = None
        self.svm: SvmArrays | None = None
        self.cache_dir: Path | None = None
        self.use_cache = True
        self.n_jobs = 1

    def _descriptors(self, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
        return extract_descriptors(dataset, self.sift, self.cache_dir, self.n_jobs, use_cache=self.use_cache)

    def _cluster(self, desc: np.ndarray) -> np.ndarray:
        from sklearn.cluster import MiniBatchKMeans

        k = int(self.params["k"])
        cap = int(self.params["max_descriptors_for_kmeans"])
        seed = int(self.params["seed"])
        rows = None
        if len(desc) > cap:  # seeded subsample; sorted rows read a memory-mapped cache sequentially
            rows = np.sort(np.random.default_rng(seed).choice(len(desc), cap, replace=False))
        sample = np.asarray(desc if rows is None else desc[rows], np.float32)
        if len(sample) < k:
            raise FitError(
                f"sift_bow_svm: k={k} visual words but only {len(sample)} training descriptors "
                "(lower k, use dense=True, or lower sift_contrast_threshold)"
            )
        kmeans = MiniBatchKMeans(
            n_clusters=k, batch_size=int(self.params["kmeans_batch_size"]), random_state=seed, n_init="auto"
        )
        return kmeans.fit(sample).cluster_centers_.astype(np.float32)

    def fit(
        self,
        data: FitData,
        epochs: int,
        callback: EpochCallback | None = None,
        *,
        use_cache: bool = True,
        n_jobs: int | None = None,
        **engine_options: Any,
    ) -> list[EpochReport]:
        """Fit k-means and the SVM once (one "epoch") and report; returns the reports of this call.

        Args:
            data: training/validation datasets; ``data.cache_dir`` is the descriptor-cache base directory.
            epochs: any value >= 1 fits the model (once); a fitted model returns ``[]``.
            callback: called once with the epoch-1 report (its return value cannot stop anything).
            use_cache: use the descriptor cache (default ``True``).
            n_jobs: processes for a fresh extraction (default ``max(1, data.num_workers)``).
            **engine_options: torch-engine options (``device``, ``is_main``, ...) accepted and ignored,
                so the runtime can call every family alike.
        """
        if epochs < 1 or self.epochs_done >= 1:
            return []
        start = time.perf_counter()
        self.cache_dir = data.cache_dir
        self.use_cache = use_cache
        self.n_jobs = int(n_jobs or max(1, data.num_workers))
        y_train, y_val = _labels(data.train, "train"), _labels(data.val, "val")
        if len(np.unique(y_train)) != 2:
            raise FitError(
                f"sift_bow_svm: the training partition has only class {np.unique(y_train).tolist()}"
            )
        train_desc, train_off = self._descriptors(data.train)
        val_desc, val_off = self._descriptors(data.val)
        extract_s = time.perf_counter() - start

        from sklearn.svm import SVC

        p = self.params
        centers = self._cluster(train_desc)
        x_train = bow_histograms(train_desc, train_off, centers, p["norm"])
        gamma = _resolve_gamma(p["svm_gamma"], x_train)
        svc = SVC(
            C=float(p["svm_c"]),
            kernel=p["svm_kernel"],
            gamma=gamma,
            class_weight=None if p["class_weight"] == "none" else "balanced",
        ).fit(x_train, y_train)
        self.centers, self.svm = centers, SvmArrays.from_sklearn(svc, gamma)
        x_val = bow_histograms(val_desc, val_off, centers, p["norm"])
        report = EpochReport(
            epoch=1,
            metrics={
                "val_auc": roc_auc(y_val, self.svm.decision_function(x_val), warn=False),
                "train_auc": roc_auc(y_train, self.svm.decision_function(x_train), warn=False),
                "n_descriptors": float(len(train_desc)),
                "n_empty_slices": float(np.sum(np.diff(train_off) == 0)),
                "extract_s": extract_s,
                "wall_s": time.perf_counter() - start,
            },
        )
        self.epochs_done = 1
        self.history.append(report)
        if callback is not None:
            callback(report, self)
        return [report]

    def predict(self, dataset: Any) -> np.ndarray:
        """``sigmoid(SVM margin)`` per slice, ``float64[len(dataset)]`` in [0, 1]."""
        if self.centers is None or self.svm is None:
            raise RuntimeError("sift_bow_svm model is not fitted (call fit or load)")
        desc, offsets = self._descriptors(dataset)
        x = bow_histograms(desc, offsets, self.centers, self.params["norm"])
        return expit(self.svm.decision_function(x)).astype(np.float64)

    def save(self, directory: str | Path) -> Path:
        """Write ``centers.npy``, ``svm.npz`` and ``meta.json`` as one directory, atomically."""
        if self.centers is None or self.svm is None:
            raise RuntimeError("cannot save an unfitted sift_bow_svm model")
        meta = {**self.meta(), "opencv": cv2.__version__, "files": [CENTERS_FILE, SVM_FILE]}
        with atomic_directory(directory) as tmp:
            np.save(tmp / CENTERS_FILE, self.centers, allow_pickle=False)
            with open(tmp / SVM_FILE, "wb") as fh:
                self.svm.save(fh)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))
        return Path(directory)

    def export(self, directory: Path) -> dict[str, Any]:
        """Nothing beyond the checkpoint: its pickle-free arrays are the deployable model."""
        return {**super().export(directory), "arrays": [CENTERS_FILE, SVM_FILE]}

    def preprocess_notes(self) -> dict[str, Any]:
        return {"sift_input": U8_FORMULA}

    @classmethod
    def load(cls, directory: str | Path) -> SiftBowSvmModel:
        src = Path(directory)
        meta = read_meta(src)
        if meta.get("family") != cls.family:
            raise ValueError(f"{src}: checkpoint of family {meta.get('family')!r}, not {cls.family!r}")
        model = cls(meta["params"], DataSpec.from_dict(meta["spec"]))
        centers = np.load(src / CENTERS_FILE, allow_pickle=False)
        svm = SvmArrays.load(src / SVM_FILE)
        k = int(model.params["k"])
        if centers.shape != (k, DESCRIPTOR_DIM) or svm.support_vectors.shape[1] != k:
            raise ValueError(f"{src}: centers {centers.shape} / support vectors do not match k={k}")
        if svm.classes.tolist() != [0, 1]:
            raise ValueError(f"{src}: SVM classes {svm.classes.tolist()}, expected [0, 1]")
        model.centers, model.svm = centers.astype(np.float32), svm
        model.epochs_done = int(meta.get("epochs_done", 1))
        model.history = [
            EpochReport(int(h["epoch"]), {n: float(v) for n, v in h.items() if n != "epoch"})
            for h in meta.get("history", [])
        ]
        return model


@register
class SiftBowSvm(Family):
    """SIFT descriptors -> k-means bag of visual words -> SVM (paper best: k = 100, AUC 0.55)."""

    name: ClassVar[str] = "sift_bow_svm"
    kind: ClassVar[str] = "classic"
    description: ClassVar[str] = "OpenCV SIFT + MiniBatchKMeans bag of words + SVM (paper baseline)"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "k": 100,
            "sift_nfeatures": 0,
            "sift_contrast_threshold": 0.04,
            "sift_edge_threshold": 10.0,
            "sift_sigma": 1.6,
            "dense": False,
            "dense_step": 16,
            "dense_size": 16.0,
            "kmeans_batch_size": 4096,
            "max_descriptors_for_kmeans": 200_000,
            "norm": "l1",
            "svm_c": 1.0,
            "svm_kernel": "rbf",
            "svm_gamma": "scale",
            "class_weight": "none",
            "seed": 0,
        }

    warms_shared_cache: ClassVar[bool] = True

    @classmethod
    def warm_cache(
        cls,
        params: Mapping[str, Any],
        data: Mapping[str, Any],
        cache_dir: Path,
        n_jobs: int,
        searched: list[str],
    ) -> dict[str, int]:
        """Extract the train/val SIFT descriptors once (they depend on the data and SIFT settings, not on k
        or the SVM knobs). When the space searches SIFT settings themselves, only the default/fixed
        settings are extracted here; other settings are extracted by the first trial that needs them, once
        (the cache holds a per-entry lock)."""
        import joblib

        from .sift_features import SiftParams, extract_descriptors

        sift_knobs = [n for n in searched if n.startswith(("sift_", "dense"))]
        if sift_knobs:
            log.info("SIFT settings %s are searched: pre-warming only the default/fixed settings", sift_knobs)
        sift = SiftParams.from_family_params(dict(params))
        counts = {}
        # Threads, not loky processes: OpenCV releases the GIL, and loky's resource tracker misbehaves
        # inside Ray worker processes.
        with joblib.parallel_config(backend="threading"):
            for part in ("train", "val"):
                desc, _ = extract_descriptors(data[part], sift, cache_dir, n_jobs)
                counts[part] = int(len(desc))
        return counts

    @classmethod
    def fit_options(cls, *, device: str, cpus: float, use_cache: bool) -> dict[str, Any]:
        """SIFT extraction threads from the trial's CPUs; the shared descriptor cache when allowed."""
        return {"n_jobs": max(1, int(cpus)), "use_cache": use_cache}

    @classmethod
    def build(cls, params: Mapping[str, Any], spec: DataSpec) -> SiftBowSvmModel:
        return SiftBowSvmModel(cls.resolve_params(params), spec)

    @classmethod
    def load(cls, directory: str | Path) -> SiftBowSvmModel:
        return SiftBowSvmModel.load(directory)

    @classmethod
    def count_parameters(cls, directory: str | Path) -> None:
        """No network to count (the checkpoint is not even loaded)."""
        return None

    @classmethod
    def open_export(cls, directory: str | Path, spec: DataSpec) -> CheckpointScorer:
        """The pickle-free arrays score new slices (no descriptor cache: new data); no heat maps."""
        model = cls.load(directory)
        model.use_cache = False
        return CheckpointScorer(model, spec, heatmap_method="none for the SIFT baseline")
