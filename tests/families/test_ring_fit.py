"""A fit whose batches come through the shared-memory ring (``data/ring.py``, loader workers) trains
exactly as one fed by the per-item DataLoader in the trial's process: same batches, same order, same
augmentation per (seed, epoch, index). Catches: a ring that reorders, drops or corrupts batches, or a
packed batch that finishes differently from the unpacked one.
"""

from __future__ import annotations

import math

from dvt_search import families
from dvt_search.data.augment import Augment
from dvt_search.data.compact import CompactSlices
from dvt_search.data.dataset import SliceDataset
from dvt_search.families.base import FitData


def _fit(tiny, workers: int) -> list[dict[str, float]]:
    train, val, spec = tiny
    aug = Augment(hflip_p=0.5, rotation_deg=10, intensity_jitter_hu=20, noise_sd_hu=10)
    train = SliceDataset(train.frame, train.root, size=train.size, augment=aug, seed=5)
    model = families.get("multitask_unet").build({"batch_size": 6, "seed": 3}, spec)
    reports = model.fit(FitData(train=train, val=val, num_workers=workers), 2)
    return [r.metrics for r in reports]


def test_ring_fit_equals_the_per_item_loader_fit(tiny, monkeypatch) -> None:
    ring = _fit(tiny, workers=2)
    monkeypatch.setattr(CompactSlices, "batches_in_ring", False)
    plain = _fit(tiny, workers=0)
    assert len(ring) == len(plain) == 2
    for r, p in zip(ring, plain, strict=True):
        for key in ("train_loss", "val_loss", "val_auc", "val_dice"):
            assert math.isclose(r[key], p[key], rel_tol=1e-6, abs_tol=1e-7), (key, r[key], p[key])
    assert ring[0]["train_loss"] != ring[1]["train_loss"]
