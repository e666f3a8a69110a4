"""Per-trial checkpoints of ``direct`` trials, kept by the trial itself on the shared storage.

Why not Tune's trial checkpoints: Tune restores a retried or resumed trial from the checkpoint named in
its experiment snapshot, which is written every few seconds, while ``num_to_keep`` deletes old checkpoints
as new ones arrive. A driver killed between the two leaves a snapshot naming a deleted checkpoint, and the
resumed trial fails before any user code runs. A store the trial owns (like a Ray Train run, which is
restored by its name) has no such gap: ``<run>/train/<family>/<trial_id>/`` holds ``epoch_NNNN/``
checkpoint directories (``Model.save`` layout, each written under a temporary name and renamed) and
``index.json`` (written atomically, *before* any old checkpoint is deleted). Kept: the latest checkpoint
and the ``keep`` best by the run metric.

Lean checkpoints: only the latest checkpoint keeps the files needed to resume training (the model's
``training_only_files``, e.g. the torch families' ``train_state.pt`` with the Adam moments, twice the
weights); when a newer epoch is saved, every other kept checkpoint is stripped to its weights. For VGG-16
with the classifier head that is ~0.5 GiB per best checkpoint instead of ~1.5 GiB. Bytes *written* per
epoch are unchanged (the latest is always written in full); what a trial holds on the storage drops from
``(keep + 1)`` full checkpoints to one full and ``keep`` weights-only ones. Stripping is repeated at every
save, so a process killed between the index write and the strip leaves nothing wrong behind. A resume
normally starts from the latest (full) checkpoint; if that one is lost, it starts from a weights-only one
with fresh optimizer moments, the learning-rate schedule still placed at its epoch.

The writes stay on the training thread: a trial reports each checkpoint's path to Tune right after
saving it, and Tune may stop (end) a trial's process at any report, so a write still in flight on a
background thread could be lost while the records already point to it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dvt_search.fsutil import atomic_write_text

INDEX_FILE = "index.json"


class TrialCheckpoints:
    """The checkpoints of one trial.

    Args:
        root: the trial's directory (created on first save).
        keep: best checkpoints kept besides the latest one.
        metric: metric that ranks checkpoints.
        mode: ``max`` or ``min``.
    """

    def __init__(self, root: str | Path, *, keep: int, metric: str = "val_auc", mode: str = "max") -> None:
        self.root = Path(root)
        self.keep = max(1, int(keep))
        self.metric = metric
        self.mode = mode

    def _index(self) -> list[dict[str, Any]]:
        f = self.root / INDEX_FILE
        return json.loads(f.read_text()) if f.is_file() else []

    def latest(self) -> Path | None:
        """The most recent checkpoint that exists on disk, or ``None``."""
        for entry in sorted(self._index(), key=lambda e: e["epoch"], reverse=True):
            path = self.root / entry["name"]
            if path.is_dir():
                return path
        return None

    def save(self, model: Any, epoch: int, metrics: dict[str, float]) -> Path:
        """Save ``model`` as the checkpoint of ``epoch``, update the index, then drop surplus checkpoints."""
        name = f"epoch_{epoch:04d}"
        target = self.root / name
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        if target.exists():  # a retried attempt re-reached this epoch
            shutil.rmtree(target)
        tmp.rename(target)
        score = metrics.get(self.metric)
        entries = [e for e in self._index() if e["epoch"] != epoch]
        entries.append({"epoch": epoch, "name": name, "score": score})
        kept = self._retain(entries, epoch)
        atomic_write_text(
            self.root / INDEX_FILE, json.dumps(sorted(kept, key=lambda e: e["epoch"]), indent=1)
        )
        for e in entries:
            if e not in kept:
                shutil.rmtree(self.root / e["name"], ignore_errors=True)
        for e in kept:
            if e["epoch"] != epoch:
                self._strip(self.root / e["name"], getattr(model, "training_only_files", frozenset()))
        return target

    @staticmethod
    def _strip(directory: Path, names: frozenset[str]) -> None:
        """Remove the resume-only files of a checkpoint that is no longer the latest."""
        for name in names:
            (directory / name).unlink(missing_ok=True)

    def _retain(self, entries: list[dict[str, Any]], latest: int) -> list[dict[str, Any]]:
        sign = 1.0 if self.mode == "max" else -1.0
        scored = [e for e in entries if e["score"] is not None]
        # best first; ties go to the later epoch (the one the records point to)
        best = sorted(scored, key=lambda e: (sign * e["score"], e["epoch"]), reverse=True)[: self.keep]
        return [e for e in entries if e in best or e["epoch"] == latest]
