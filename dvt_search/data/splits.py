"""Patient-disjoint train / validation / test splits after the paper's percentile rule (``splits.json``).

The paper (section 3) keeps femoral scans only, takes the scans whose slice count lies between the 33rd and
66th percentile ("median-ish" scans, the ones most like practice), assigns half of them to validation and
half to test, and trains on everything else (about 84 % / 8 % / 8 % of slices). Done per scan, that rule
lets one patient's scans land in training *and* test. Here whole patients are assigned instead:

``rule="paper-percentile"``:

1. **Anatomy filter.** Only rows whose ``anatomy`` is in ``anatomy`` are split (femoral in the paper).
2. **Percentile band.** Scans are ranked by slice count, ties broken by a seeded random key, and the band
   is ranks ``[round(q_lo * N), round(q_hi * N))``. Rank-based, so equal slice counts (e.g. phantom data)
   can neither empty the band nor put every scan in it.
3. **Evaluation budget.** ``T`` = the slices of all band scans: what the paper's scan-level rule sends to
   validation + test together.
4. **Evaluation patients.** Candidates are patients owning at least one band scan, taken in order of band
   purity (band slices / all their slices) high to low, ties in seeded random order. A candidate is taken
   when it brings the evaluation total closer to ``T``. A taken patient brings *all* its scans, also those
   outside the band: a few atypical evaluation scans are a smaller harm than patient leakage, and the
   purity order keeps them few (``summarize`` reports ``band_scans`` per partition). Validation and test
   get at least one patient each and training keeps at least one.
5. **Validation vs test.** Evaluation patients in seeded random order each join the partition with fewer
   slices so far; then single-patient moves that shrink the slice imbalance are applied.
6. **Train** is every other scan of the anatomy.

As in the paper, the evaluation pool is mostly a property of the data (the band); the seed decides which
half is validation and which is test, and breaks ties. On paper-like data (76 patients, ~460 scans, skewed
slice counts) this gives about 84/8/8 % of slices with roughly half of the val/test scans in the band
against a quarter of training scans; with one scan per patient val+test are exactly the band.

``kfold=K`` (``rule="kfold"``): the test partition is exactly the ``paper-percentile`` test partition for
the same seed, anatomy and quantiles (so cross-validated and single-split runs score on the same held-out
scans); every other patient goes into one of ``K`` folds balanced by slice count (step 5 with ``K`` bins).
``folds[k]`` lists the scans of fold ``k``; ``Splits.fold(k)`` gives ``(train, val)`` for fold ``k``, and
``partitions`` hold the fold-0 view so code that ignores folds still gets a valid train/val/test.

The result is persisted as JSON (see :data:`SPLITS_FORMAT`) with a SHA-256 content hash and the manifest
fingerprint, so every later stage reads the exact same split and notices when the data changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..fsutil import atomic_write_text
from .schema import ANATOMIES

SPLITS_FORMAT = "dvt-search-splits/1"
PARTITIONS = ("train", "val", "test")
RULES = ("paper-percentile", "kfold")
_FINGERPRINT_COLUMNS = ("patient_id", "study_id", "scan_id", "slice_index", "label", "anatomy")
_KEYS = (
    "format",
    "seed",
    "rule",
    "anatomy",
    "quantiles",
    "manifest_fingerprint",
    "partitions",
    "folds",
    "hash",
)

log = logging.getLogger(__name__)


class SplitsError(ValueError):
    """A split cannot be made, or a ``splits.json`` is malformed, tampered with, or for other data."""


def manifest_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 over the sorted ``(patient_id, study_id, scan_id, slice_index, label, anatomy)`` rows.

    Paths and dtypes do not enter, so CSV and Parquet copies of the same data agree.
    """
    missing = [c for c in _FINGERPRINT_COLUMNS if c not in df.columns]
    if missing:
        raise SplitsError(f"manifest frame lacks column(s) {missing} needed for its fingerprint")
    strings = [df[c].astype(str).tolist() for c in ("patient_id", "study_id", "scan_id")]
    ints = [pd.to_numeric(df[c]).astype("int64").tolist() for c in ("slice_index", "label")]
    rows = sorted(zip(*strings, *ints, df["anatomy"].astype(str).tolist()))
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\x1f".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()


def resolve_anatomy(anatomy: str | Iterable[str]) -> tuple[str, ...]:
    """``"femoral"``, ``"iliac"``, ``"both"`` or an iterable of those names -> sorted tuple of anatomies."""
    names = [anatomy] if isinstance(anatomy, str) else list(anatomy)
    out: set[str] = set()
    for name in names:
        if name == "both":
            out.update(ANATOMIES)
        elif name in ANATOMIES:
            out.add(name)
        else:
            raise SplitsError(f"unknown anatomy {name!r}; expected one of {[*ANATOMIES, 'both']}")
    if not out:
        raise SplitsError("anatomy must name at least one of femoral / iliac")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Splits:
    """A persisted split: scan ids per partition (and per fold for k-fold CV)."""

    seed: int
    rule: str
    anatomy: tuple[str, ...]
    quantiles: tuple[float, float]
    manifest_fingerprint: str
    partitions: Mapping[str, tuple[str, ...]]
    folds: tuple[tuple[str, ...], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, ``hash`` included."""
        body = self._body()
        return {**body, "hash": content_hash(body)}

    def _body(self) -> dict[str, Any]:
        return {
            "format": SPLITS_FORMAT,
            "seed": int(self.seed),
            "rule": self.rule,
            "anatomy": list(self.anatomy),
            "quantiles": [float(q) for q in self.quantiles],
            "manifest_fingerprint": self.manifest_fingerprint,
            "partitions": {p: sorted(self.partitions[p]) for p in PARTITIONS},
            "folds": None if self.folds is None else [sorted(f) for f in self.folds],
        }

    @cached_property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of every field but ``hash``."""
        return content_hash(self._body())

    @cached_property
    def _partition_of(self) -> dict[str, str]:
        return {s: p for p in PARTITIONS for s in self.partitions[p]}

    def partition_of(self, scan_id: str) -> str:
        """``"train"`` / ``"val"`` / ``"test"``; raises ``KeyError`` for a scan outside the split."""
        try:
            return self._partition_of[scan_id]
        except KeyError:
            raise KeyError(
                f"scan {scan_id!r} is in no partition of this split (anatomy {self.anatomy})"
            ) from None

    def select(self, df: pd.DataFrame, partition: str) -> pd.DataFrame:
        """Rows of ``df`` in ``partition`` (anatomy-filtered), index reset."""
        if partition not in PARTITIONS:
            raise KeyError(f"unknown partition {partition!r}; expected one of {PARTITIONS}")
        return self.select_scans(df, self.partitions[partition])

    def select_scans(self, df: pd.DataFrame, scan_ids: Iterable[str]) -> pd.DataFrame:
        """Rows of ``df`` whose scan is in ``scan_ids`` and whose anatomy is in the split's, index reset."""
        keep = df["scan_id"].astype(str).isin(set(scan_ids)) & df["anatomy"].isin(self.anatomy)
        return df.loc[keep].reset_index(drop=True)

    def fold(self, k: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(train_scan_ids, val_scan_ids)`` of cross-validation fold ``k`` (val = fold ``k``)."""
        if self.folds is None:
            raise SplitsError("this split has no folds (made without kfold)")
        if not 0 <= k < len(self.folds):
            raise SplitsError(f"fold {k} out of range: the split has {len(self.folds)} folds")
        train = sorted(s for i, f in enumerate(self.folds) if i != k for s in f)
        return tuple(train), tuple(sorted(self.folds[k]))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``splits.json`` atomically (temp file + rename)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return path


def content_hash(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _scan_table(df: pd.DataFrame, anatomy: Sequence[str]) -> pd.DataFrame:
    """One row per scan of the chosen anatomy: patient_id, slices, positives (index: scan_id)."""
    ids = df["scan_id"].astype(str)
    per_scan = (
        df.assign(scan_id=ids)
        .groupby("scan_id")
        .agg(n_patients=("patient_id", "nunique"), n_anat=("anatomy", "nunique"))
    )
    for col, what in (("n_patients", "patient"), ("n_anat", "anatomy")):
        bad = per_scan.index[per_scan[col] > 1].tolist()
        if bad:
            raise SplitsError(f"scan(s) {bad[:5]} have rows with more than one {what}")
    sub = df.loc[df["anatomy"].isin(anatomy)]
    if sub.empty:
        raise SplitsError(f"manifest has no rows of anatomy {list(anatomy)}")
    return (
        sub.assign(scan_id=sub["scan_id"].astype(str), patient_id=sub["patient_id"].astype(str))
        .groupby("scan_id")
        .agg(patient_id=("patient_id", "first"), slices=("label", "size"), positives=("label", "sum"))
        .sort_index()
    )


def _rng(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stage])


def _band(scans: pd.DataFrame, quantiles: tuple[float, float], seed: int) -> set[str]:
    """Scan ids at slice-count ranks ``[round(q_lo*N), round(q_hi*N))`` (seeded random tie-break)."""
    n = len(scans)
    order = np.lexsort((_rng(seed, 1).random(n), scans["slices"].to_numpy()))
    lo = int(round(quantiles[0] * n))
    hi = max(int(round(quantiles[1] * n)), lo + 1)
    return set(scans.index[order[lo:hi]])


def _balanced_bins(sizes: Mapping[str, int], k: int, rng: np.random.Generator) -> list[list[str]]:
    """Split keys into ``k`` bins of near-equal total size: random-order greedy, then improving moves."""
    keys = sorted(sizes)
    bins: list[list[str]] = [[] for _ in range(k)]
    totals = [0] * k
    for i in rng.permutation(len(keys)):
        b = int(np.argmin(totals))
        bins[b].append(keys[i])
        totals[b] += sizes[keys[i]]
    improved = True
    while improved:
        improved = False
        big, small = int(np.argmax(totals)), int(np.argmin(totals))
        gap = totals[big] - totals[small]
        movable = [key for key in bins[big] if 0 < sizes[key] < gap and len(bins[big]) > 1]
        if movable:  # moving m (0 < m < gap) strictly lowers the sum of squared totals, so this ends
            key = min(movable, key=lambda m: abs(gap - 2 * sizes[m]))
            bins[big].remove(key)
            bins[small].append(key)
            totals[big] -= sizes[key]
            totals[small] += sizes[key]
            improved = True
    return bins


def _eval_patients(scans: pd.DataFrame, band: set[str], seed: int) -> list[str]:
    """Step 4 of the module docstring: whole patients whose slices best match the band budget."""
    in_band = scans.index.isin(list(band))
    per_patient = (
        pd.DataFrame(
            {
                "slices": scans["slices"],
                "band": scans["slices"].where(in_band, 0),
                "patient_id": scans["patient_id"],
            }
        )
        .groupby("patient_id")[["slices", "band"]]
        .sum()
    )
    if len(per_patient) < 3:
        raise SplitsError(f"need at least 3 patients for train/val/test, the manifest has {len(per_patient)}")
    per_patient["purity"] = per_patient["band"] / per_patient["slices"]
    per_patient["tie"] = _rng(seed, 2).random(len(per_patient))
    ranked = per_patient.sort_values(["purity", "tie"], ascending=[False, True])
    target = int(per_patient["band"].sum())
    chosen: list[str] = []
    total = 0
    for pid, row in ranked.loc[ranked["band"] > 0].iterrows():
        if len(chosen) < len(ranked) - 1 and abs(total + row["slices"] - target) < abs(total - target):
            chosen.append(str(pid))
            total += int(row["slices"])
    for pid, _row in ranked.loc[~ranked.index.isin(chosen)].iterrows():  # guarantee one val and one test
        if len(chosen) >= 2:
            break
        chosen.append(str(pid))
    return chosen


def make_splits(
    df: pd.DataFrame,
    *,
    seed: int = 0,
    anatomy: str | Iterable[str] = ("femoral",),
    quantiles: tuple[float, float] = (1 / 3, 2 / 3),
    kfold: int | None = None,
) -> Splits:
    """Make a patient-disjoint split of ``df`` (a manifest frame) by the rule in the module docstring.

    Args:
        df: manifest rows (all anatomies; the fingerprint covers the whole frame).
        seed: seeds every random choice; the same inputs and seed give the same split and hash.
        anatomy: ``"femoral"`` (paper), ``"iliac"``, ``"both"`` or a sequence of anatomy names.
        quantiles: slice-count quantiles bounding the band that val/test are drawn from.
        kfold: ``K >= 2`` for patient-grouped K-fold cross-validation over the non-test patients.

    Raises:
        SplitsError: bad arguments, inconsistent scans, or too few patients for the partitions/folds.
    """
    anat = resolve_anatomy(anatomy)
    q = (float(quantiles[0]), float(quantiles[1]))
    if not 0.0 <= q[0] < q[1] <= 1.0:
        raise SplitsError(f"quantiles must satisfy 0 <= q_lo < q_hi <= 1, got {quantiles}")
    if kfold is not None and int(kfold) < 2:
        raise SplitsError(f"kfold must be >= 2, got {kfold}")
    scans = _scan_table(df, anat)
    band = _band(scans, q, seed)
    eval_pids = _eval_patients(scans, band, seed)
    patient_slices = scans.groupby("patient_id")["slices"].sum()
    val_pids, test_pids = _balanced_bins({p: int(patient_slices[p]) for p in eval_pids}, 2, _rng(seed, 3))
    scans_of = scans.groupby("patient_id").groups
    test = tuple(sorted(s for p in test_pids for s in scans_of[p]))
    folds: tuple[tuple[str, ...], ...] | None = None
    if kfold is None:
        val = tuple(sorted(s for p in val_pids for s in scans_of[p]))
    else:
        held_out = set(test_pids)
        pool = {p: int(n) for p, n in patient_slices.items() if p not in held_out}
        if len(pool) < kfold:
            raise SplitsError(
                f"kfold={kfold} needs at least {kfold} non-test patients, there are {len(pool)}"
            )
        bins = _balanced_bins(pool, int(kfold), _rng(seed, 4))
        folds = tuple(tuple(sorted(s for p in b for s in scans_of[p])) for b in bins)
        val = folds[0]
    held = set(val) | set(test)
    train = tuple(sorted(s for s in scans.index if s not in held))
    splits = Splits(
        seed=int(seed),
        rule="paper-percentile" if kfold is None else "kfold",
        anatomy=anat,
        quantiles=q,
        manifest_fingerprint=manifest_fingerprint(df),
        partitions={"train": train, "val": val, "test": test},
        folds=folds,
    )
    fr = [scans.loc[list(splits.partitions[p]), "slices"].sum() / scans["slices"].sum() for p in PARTITIONS]
    log.info("splits %s seed=%d: train/val/test slice fractions %.3f/%.3f/%.3f", splits.rule, seed, *fr)
    return splits


def _fail(path: Path, message: str) -> SplitsError:
    return SplitsError(f"{path}: {message}")


def _id_list(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _fail(path, f"{where} must be a list of scan id strings")
    if value != sorted(value) or len(set(value)) != len(value):
        raise _fail(path, f"{where} must be sorted and free of duplicates")
    return tuple(value)


def load_splits(path: str | os.PathLike[str], manifest_df: pd.DataFrame | None = None) -> Splits:
    """Read and verify ``splits.json``: format, fields, content hash, and (given a manifest) its fingerprint.

    Raises:
        SplitsError: naming the file and what mismatched.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"cannot read splits file: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != SPLITS_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise _fail(path, f"format is {got!r}, expected {SPLITS_FORMAT!r}")
    if set(doc) != set(_KEYS):
        raise _fail(path, f"fields {sorted(doc)} differ from the expected {sorted(_KEYS)}")
    body = {k: v for k, v in doc.items() if k != "hash"}
    if content_hash(body) != doc["hash"]:
        raise _fail(path, "content hash mismatch: the file was edited after it was written")
    parts = doc["partitions"]
    if not isinstance(parts, dict) or set(parts) != set(PARTITIONS):
        raise _fail(path, f"partitions must have exactly the keys {list(PARTITIONS)}")
    partitions = {p: _id_list(path, f"partitions.{p}", parts[p]) for p in PARTITIONS}
    seen: dict[str, str] = {}
    for p, ids in partitions.items():
        for s in ids:
            if s in seen:
                raise _fail(path, f"scan {s!r} is in both {seen[s]!r} and {p!r}")
            seen[s] = p
    folds = None
    if doc["folds"] is not None:
        if not isinstance(doc["folds"], list) or len(doc["folds"]) < 2:
            raise _fail(path, "folds must be null or a list of at least 2 scan id lists")
        folds = tuple(_id_list(path, f"folds[{i}]", f) for i, f in enumerate(doc["folds"]))
        flat = [s for f in folds for s in f]
        if len(flat) != len(set(flat)) or set(flat) != set(partitions["train"]) | set(partitions["val"]):
            raise _fail(path, "folds must be disjoint and cover exactly the train + val scans")
    if doc["rule"] not in RULES or (doc["rule"] == "kfold") != (folds is not None):
        raise _fail(path, f"rule {doc['rule']!r} does not match the folds field")
    try:
        anatomy = resolve_anatomy(doc["anatomy"])
        q_lo, q_hi = (float(v) for v in doc["quantiles"])
        seed = int(doc["seed"])
    except (SplitsError, TypeError, ValueError) as exc:
        raise _fail(path, f"bad anatomy/quantiles/seed field: {exc}") from exc
    splits = Splits(
        seed, doc["rule"], anatomy, (q_lo, q_hi), str(doc["manifest_fingerprint"]), partitions, folds
    )
    if manifest_df is not None:
        actual = manifest_fingerprint(manifest_df)
        if actual != splits.manifest_fingerprint:
            raise _fail(
                path,
                f"manifest fingerprint mismatch: split made for {splits.manifest_fingerprint[:12]}..., "
                f"this manifest is {actual[:12]}... (re-run `dvt-search data split`)",
            )
    return splits


def summarize(df: pd.DataFrame, splits: Splits) -> pd.DataFrame:
    """One row per partition: patients, scans, slices, slice_fraction, positives, pos_fraction, band_scans.

    ``band_scans`` counts the partition's scans inside the slice-count percentile band of the split.
    """
    scans = _scan_table(df, splits.anatomy)
    band = _band(scans, splits.quantiles, splits.seed)
    rows = []
    for p in PARTITIONS:
        sub = scans.loc[scans.index.isin(list(splits.partitions[p]))]
        slices, pos = int(sub["slices"].sum()), int(sub["positives"].sum())
        rows.append(
            {
                "partition": p,
                "patients": int(sub["patient_id"].nunique()),
                "scans": len(sub),
                "slices": slices,
                "positives": pos,
                "pos_fraction": pos / slices if slices else float("nan"),
                "band_scans": int(sub.index.isin(list(band)).sum()),
            }
        )
    frame = pd.DataFrame(rows).set_index("partition")
    total = frame["slices"].sum()
    frame.insert(3, "slice_fraction", frame["slices"] / total if total else float("nan"))
    return frame


def format_summary(frame: pd.DataFrame) -> str:
    """A plain-text table of :func:`summarize` output with a total line."""
    lines = [
        f"{'partition':<10}{'patients':>9}{'scans':>7}{'slices':>8}{'slice%':>8}{'pos':>7}{'pos%':>7}{'band':>6}"
    ]
    counts = ["patients", "scans", "slices", "positives", "band_scans"]
    total = frame[counts].sum()
    rows = [(str(name), r, float(r["slice_fraction"])) for name, r in frame.iterrows()]
    rows.append(("total", total, 1.0 if total["slices"] else float("nan")))
    for name, r, frac in rows:
        n = {c: int(r[c]) for c in counts}
        pos = n["positives"] / n["slices"] if n["slices"] else float("nan")
        lines.append(
            f"{name:<10}{n['patients']:>9}{n['scans']:>7}{n['slices']:>8}{100 * frac:>7.1f}%"
            f"{n['positives']:>7}{100 * pos:>6.1f}%{n['band_scans']:>6}"
        )
    return "\n".join(lines)
