"""The per-trial checkpoint store: atomic epochs, an index, the latest plus the best kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dvt_search.runtime.checkpoints import INDEX_FILE, TrialCheckpoints


class Saved:
    """Stands in for a Model: ``save`` writes one file naming the epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True)
        (directory / "meta.json").write_text(json.dumps({"epochs_done": self.epoch}))
        return directory


def test_keeps_latest_and_best_and_survives_a_lost_directory(tmp_path) -> None:
    store = TrialCheckpoints(tmp_path / "t", keep=2)
    assert store.latest() is None
    for epoch, auc in enumerate([0.6, 0.9, 0.7, 0.8, 0.5], start=1):
        path = store.save(Saved(epoch), epoch, {"val_auc": auc})
        assert path == tmp_path / "t" / f"epoch_{epoch:04d}"
    kept = sorted(p.name for p in (tmp_path / "t").iterdir() if p.is_dir())
    assert kept == ["epoch_0002", "epoch_0004", "epoch_0005"]  # best two (0.9, 0.8) and the latest
    index = json.loads((tmp_path / "t" / INDEX_FILE).read_text())
    assert [e["epoch"] for e in index] == [2, 4, 5]
    assert store.latest() == tmp_path / "t" / "epoch_0005"
    shutil.rmtree(tmp_path / "t" / "epoch_0005")
    assert store.latest() == tmp_path / "t" / "epoch_0004"


def test_a_retried_epoch_replaces_its_checkpoint_and_min_mode(tmp_path) -> None:
    store = TrialCheckpoints(tmp_path / "t", keep=1, metric="val_loss", mode="min")
    store.save(Saved(1), 1, {"val_loss": 0.5})
    store.save(Saved(2), 2, {"val_loss": 0.7})
    store.save(Saved(2), 2, {"val_loss": 0.3})  # the retry re-reached epoch 2
    assert sorted(p.name for p in (tmp_path / "t").iterdir() if p.is_dir()) == ["epoch_0002"]
    assert not any(p.name.startswith(".") for p in (tmp_path / "t").iterdir() if p.is_dir())


class Full(Saved):
    """A model whose checkpoint holds a resume-only file, as the torch families' ``train_state.pt``."""

    training_only_files = frozenset({"train_state.pt"})

    def save(self, directory: Path) -> Path:
        super().save(directory)
        (directory / "weights.pt").write_bytes(b"w" * 100)
        (directory / "train_state.pt").write_bytes(b"s" * 200)
        return directory


def test_only_the_latest_checkpoint_keeps_the_training_state(tmp_path) -> None:
    store = TrialCheckpoints(tmp_path / "t", keep=2)
    for epoch, auc in enumerate([0.6, 0.9, 0.7, 0.8, 0.5], start=1):
        store.save(Full(epoch), epoch, {"val_auc": auc})
        latest = store.latest()
        assert latest is not None and (latest / "train_state.pt").is_file()
        others = [p for p in (tmp_path / "t").iterdir() if p.is_dir() and p != latest]
        assert all((p / "weights.pt").is_file() and not (p / "train_state.pt").exists() for p in others)
    held = sum(f.stat().st_size for f in (tmp_path / "t").rglob("*.pt"))
    assert held == 3 * 100 + 200  # kept: epochs 2 and 4 (best, weights only) and 5 (latest, full)


def test_the_record_copy_leaves_the_training_state_out(tmp_path) -> None:
    from dvt_search import families
    from dvt_search.runtime.callbacks import copy_checkpoint

    src = Full(3).save(tmp_path / "src")
    skip = families.get("vgg16").training_only_files
    assert skip == {"train_state.pt"}
    copy_checkpoint(src, tmp_path / "copy", skip)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["meta.json", "weights.pt"]
    assert (src / "train_state.pt").is_file()  # the store's own checkpoint is untouched
