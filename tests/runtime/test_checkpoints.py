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
