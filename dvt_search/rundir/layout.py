"""The run directory: what a search leaves behind, in plain files any later stage can read without Ray.

:class:`RunDir` is the one owner of every path and file format under ``<storage>/<run_name>/``; no other
module spells a run-directory file name::

    run.json                      RunInfo: identity, frozen RunConfig, progress (see :mod:`.records`)
    splits.json                   copy of the splits the run used (hash checked by every later stage)
    search_spaces/<family>.yaml   snapshot of each searched space
    optuna.journal                Optuna journal storage; one study per family, named after the family
    optuna.journal.torn-*.bak     the journal before a torn last record was dropped (:mod:`.journal`)
    .dvt-storage-marker           a random token the driver writes once; every trial checks it sees it
    tune/<family>/...             the Ray Tune experiment (what ``--resume`` restores)
    train/<family>/<trial_id>/    the trial's own checkpoint store (a Ray Train run for ray-train trials)
    cache/                        derived artefacts shared by trials (the SIFT descriptor cache)
    trials/<family>/<trial_id>/
        trial.json                TrialRecord (rewritten atomically on every change)
        metrics.jsonl             one JSON object per finished epoch
        checkpoint/               the trial's best checkpoint (``Model.save`` layout), when it has one
    leaderboard.{parquet,csv}     every trial as one table (``dvt-search select``)
    selection.json                the winners chosen on validation
    val_predictions.parquet       the winners' validation scores
    test_predictions.parquet      the winners' test scores (the one touch of test)
    comparison.json               the statistics of the comparison on test
    test_evaluations.jsonl        append-only log: one JSON object per evaluation of the test set

The driver (runtime) writes the search's files, ``dvt-search select`` the selection's; every stage reads
through this class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dvt_search.fsutil import atomic_write, atomic_write_text

from .records import FINAL, STATUSES, RunInfo, TrialRecord, json_default, to_json

RUN_FILE = "run.json"
SPLITS_FILE = "splits.json"
SPACES_DIR = "search_spaces"
JOURNAL_FILE = "optuna.journal"
TUNE_DIR = "tune"
#: Joins the families of a shared Tune experiment in its directory name (family names never hold it).
TUNE_GROUP_SEP = "+"
TRAIN_DIR = "train"
CACHE_DIR = "cache"
TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
LEADERBOARD_PARQUET = "leaderboard.parquet"
LEADERBOARD_CSV = "leaderboard.csv"
SELECTION_FILE = "selection.json"
COMPARISON_FILE = "comparison.json"
TEST_LOG_FILE = "test_evaluations.jsonl"
STORAGE_MARKER_FILE = ".dvt-storage-marker"
GPU_MEMORY_FILE = "gpu_memory.json"
PREDICTIONS_FILES = {"val": "val_predictions.parquet", "test": "test_predictions.parquet"}
#: The small top-level files of a finished run (what ``dvt-search pull`` fetches besides trial records).
SUMMARY_FILES = (
    RUN_FILE,
    SPLITS_FILE,
    SELECTION_FILE,
    COMPARISON_FILE,
    TEST_LOG_FILE,
    LEADERBOARD_PARQUET,
    LEADERBOARD_CSV,
    *PREDICTIONS_FILES.values(),
    JOURNAL_FILE,
)
#: The per-trial record files (``trials/<family>/<trial>/<file>``).
TRIAL_RECORD_FILES = (TRIAL_FILE, METRICS_FILE)

__all__ = [
    "FINAL",
    "STATUSES",
    "SUMMARY_FILES",
    "TRIAL_RECORD_FILES",
    "RunDir",
    "RunInfo",
    "TrialRecord",
    "latest_run",
]

#: What to run to create each derived file (for "missing file" messages).
_MADE_BY = {
    SELECTION_FILE: "dvt-search select {run}",
    COMPARISON_FILE: "dvt-search select {run}",
    LEADERBOARD_PARQUET: "dvt-search select {run}",
    PREDICTIONS_FILES["val"]: "dvt-search select {run}",
    PREDICTIONS_FILES["test"]: "dvt-search select {run}",
}


def latest_run(storage: str | os.PathLike[str]) -> Path | None:
    """The most recently modified run directory under ``storage`` (``None`` when there is none)."""
    runs = sorted(Path(storage).glob(f"*/{RUN_FILE}"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else None


class RunDir:
    """Paths, readers and writers of one run directory (local path or a mounted shared filesystem)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths ------------------------------------------------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def splits_file(self) -> Path:
        return self.path / SPLITS_FILE

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL_FILE

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE_DIR

    @property
    def tune_root(self) -> Path:
        return self.path / TUNE_DIR

    def tune_dir(self, family: str) -> Path:
        """The family's Ray Tune experiment (``tune/<family>``)."""
        return self.tune_root / family

    def tune_group_dir(self, families: Sequence[str]) -> Path:
        """The Ray Tune experiment several families share (``tune/<family>+<family>...``, sorted)."""
        return self.tune_root / TUNE_GROUP_SEP.join(sorted(families))

    def tune_groups(self) -> list[tuple[str, ...]]:
        """The shared experiments on disk, each as its member families (sorted)."""
        if not self.tune_root.is_dir():
            return []
        return [
            tuple(p.name.split(TUNE_GROUP_SEP))
            for p in sorted(self.tune_root.iterdir())
            if p.is_dir() and TUNE_GROUP_SEP in p.name
        ]

    def train_dir(self, family: str) -> Path:
        """Where the family's trials keep their own checkpoint stores (``train/<family>``)."""
        return self.path / TRAIN_DIR / family

    def space_file(self, family: str) -> Path:
        """The snapshot of the family's searched space."""
        return self.path / SPACES_DIR / f"{family}.yaml"

    def trial_dir(self, family: str, trial_id: str) -> Path:
        return self.path / TRIALS_DIR / family / trial_id

    def trial_file(self, family: str, trial_id: str) -> Path:
        return self.trial_dir(family, trial_id) / TRIAL_FILE

    def checkpoint_dir(self, family: str, trial_id: str) -> Path:
        return self.trial_dir(family, trial_id) / CHECKPOINT_DIR

    @property
    def leaderboard_files(self) -> tuple[Path, Path]:
        """``leaderboard.parquet`` and ``leaderboard.csv``."""
        return self.path / LEADERBOARD_PARQUET, self.path / LEADERBOARD_CSV

    @property
    def selection_file(self) -> Path:
        return self.path / SELECTION_FILE

    @property
    def comparison_file(self) -> Path:
        return self.path / COMPARISON_FILE

    @property
    def test_log_file(self) -> Path:
        """The append-only log of every evaluation of the test set (``test_evaluations.jsonl``)."""
        return self.path / TEST_LOG_FILE

    def predictions_file(self, partition: str) -> Path:
        """The winners' scores on ``val`` or ``test``."""
        try:
            return self.path / PREDICTIONS_FILES[partition]
        except KeyError:
            raise ValueError(
                f"partition must be one of {sorted(PREDICTIONS_FILES)}, got {partition!r}"
            ) from None

    @property
    def storage_marker(self) -> Path:
        """The run's storage marker: every trial process checks it reads the driver's token there."""
        return self.path / STORAGE_MARKER_FILE

    def ensure_storage_marker(self) -> str:
        """The run's storage-marker token, written (a fresh random one) when the run has none yet."""
        import uuid

        token = self.read_storage_marker()
        if token is None:
            token = f"dvt-search run {self.path.name} {uuid.uuid4().hex}"
            atomic_write_text(self.storage_marker, token + "\n")
        return token

    def read_storage_marker(self) -> str | None:
        """The token in the storage marker (``None`` when there is no marker file)."""
        try:
            return self.storage_marker.read_text().strip()
        except FileNotFoundError:
            return None

    @property
    def gpu_memory_file(self) -> Path:
        """Measured GPU memory per (family, batch size, image size) and the shares picked from it
        (``--gpus-per-trial auto``; measured once per run, :mod:`dvt_search.runtime.packing`)."""
        return self.path / GPU_MEMORY_FILE

    def storage_probe(self) -> Path:
        """A fresh, unique probe file name in the run directory (the shared-storage check writes it)."""
        import uuid

        return self.path / f".dvt-shared-check-{uuid.uuid4().hex}"

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the run directory (POSIX form, as stored in tables)."""
        return Path(path).relative_to(self.path).as_posix()

    # --- run.json ---------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the directory holds a run (a ``run.json``)."""
        return self.run_file.exists()

    def write_info(self, info: RunInfo) -> None:
        atomic_write_text(self.run_file, to_json(info.to_dict()))

    def read_info(self) -> RunInfo:
        f = self.run_file
        if not f.is_file():
            raise FileNotFoundError(f"{self.path}: not a dvt-search run directory (no {RUN_FILE})")
        try:
            doc = json.loads(f.read_text())
        except ValueError as exc:
            raise ValueError(f"{f}: not valid JSON ({exc})") from None
        return RunInfo.from_dict(doc, where=str(f))

    # --- documents written by later stages (selection.json, comparison.json) ---------------------------------------
    def write_doc(self, path: Path, doc: Mapping[str, Any]) -> Path:
        """Write a JSON document of the run atomically (NaN allowed, as JSON's ``NaN``)."""
        return atomic_write_text(
            path, json.dumps(doc, indent=2, sort_keys=True, default=float, allow_nan=True)
        )

    def read_doc(self, path: Path) -> dict[str, Any]:
        """A JSON document of the run; ``FileNotFoundError`` says which command writes it."""
        if not path.is_file():
            raise FileNotFoundError(self._missing(path))
        return json.loads(path.read_text())

    def write_frame(self, path: Path, frame: Any) -> Path:
        """Write a pandas frame atomically as Parquet (``.parquet``) or CSV (anything else)."""
        if path.suffix == ".parquet":
            return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))

    def read_frame(self, path: Path) -> Any:
        """A Parquet table of the run; ``FileNotFoundError`` says which command writes it."""
        import pandas as pd

        if not path.is_file():
            raise FileNotFoundError(self._missing(path))
        return pd.read_parquet(path)

    def _missing(self, path: Path) -> str:
        made_by = _MADE_BY.get(path.name)
        hint = f" (run `{made_by.format(run=self.path)}` first)" if made_by else ""
        what = {SELECTION_FILE: "no selection", COMPARISON_FILE: "no comparison"}.get(path.name, "missing")
        if path.name in PREDICTIONS_FILES.values():
            what = "no predictions"
        elif path.name == LEADERBOARD_PARQUET:
            what = "no leaderboard"
        return f"{path}: {what}{hint}"

    # --- the test-evaluation log ---------------------------------------------------------------------------------
    def read_test_log(self) -> list[dict[str, Any]]:
        """Every recorded evaluation of the test set, oldest first (``[]`` when there is none)."""
        f = self.test_log_file
        if not f.is_file():
            return []
        out = []
        for i, line in enumerate(f.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{f}: line {i} is not valid JSON ({exc})") from None
        return out

    def append_test_log(self, record: Mapping[str, Any]) -> Path:
        """Append one evaluation record; earlier lines are kept byte for byte (the file is replaced whole)."""
        f = self.test_log_file
        old = f.read_text() if f.is_file() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        line = json.dumps(dict(record), sort_keys=True, default=json_default, allow_nan=True)
        return atomic_write_text(f, old + line + "\n")

    # --- trials -----------------------------------------------------------------------------------------------
    def write_trial(self, rec: TrialRecord) -> None:
        from dataclasses import asdict

        atomic_write_text(self.trial_file(rec.family, rec.trial_id), to_json(asdict(rec)))

    def read_trial(self, family: str, trial_id: str) -> TrialRecord | None:
        """The trial's record, or ``None`` when it has none (yet) or it cannot be read."""
        f = self.trial_file(family, trial_id)
        try:
            return TrialRecord.from_dict(json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def append_epoch(self, family: str, trial_id: str, metrics: Mapping[str, Any]) -> None:
        """Append one epoch's metrics (must hold ``epoch``); a re-reported epoch replaces the old line."""
        f = self.trial_dir(family, trial_id) / METRICS_FILE
        rows = [r for r in self.read_epochs(family, trial_id) if r.get("epoch") != metrics.get("epoch")]
        rows.append(dict(metrics))
        rows.sort(key=lambda r: r.get("epoch", 0))
        atomic_write_text(
            f, "".join(json.dumps(r, sort_keys=True, default=json_default) + "\n" for r in rows)
        )

    def read_epochs(self, family: str, trial_id: str) -> list[dict[str, Any]]:
        f = self.trial_dir(family, trial_id) / METRICS_FILE
        if not f.is_file():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    def iter_trials(self, family: str | None = None) -> Iterator[TrialRecord]:
        root = self.path / TRIALS_DIR
        if family:
            fams = [family]
        else:
            fams = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for fam in fams:
            for f in sorted((root / fam).glob(f"*/{TRIAL_FILE}")):
                yield TrialRecord.from_dict(json.loads(f.read_text()))

    def trials(self, family: str | None = None) -> list[TrialRecord]:
        return list(self.iter_trials(family))
