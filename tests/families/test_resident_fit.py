"""``fit`` with a resident budget trains exactly as from the store, and says what it held in memory.

On the CPU training is deterministic per ``(seed, epoch)``, so a run whose compact slices are resident
must give the very same per-epoch losses and AUCs as a run reading them from the store (with loader
workers, whose persistence must not change the data order), augmentation and masks included.
"""

from __future__ import annotations

import logging

from dvt_search import families
from dvt_search.data.augment import Augment
from dvt_search.data.dataset import SliceDataset
from dvt_search.families.base import FitData

AUG = Augment(hflip_p=0.5, rotation_deg=10, intensity_jitter_hu=20, noise_sd_hu=10)


def _augmented(ds: SliceDataset) -> SliceDataset:
    return SliceDataset(ds.frame, ds.root, size=ds.size, windows=ds.windows, augment=AUG, seed=3)


def test_resident_fit_equals_store_fit(tiny, caplog) -> None:
    train, val, spec = tiny
    train = _augmented(train)
    params = {"batch_size": 8, "schedule": "none"}

    def fit(**resident) -> list[dict[str, float]]:
        model = families.get("multitask_unet").build(params, spec)
        data = FitData(train=train, val=val, num_workers=0 if resident else 1, **resident)
        return [r.metrics for r in model.fit(data, 2, device="cpu")]

    store = fit()
    with caplog.at_level(logging.INFO, logger="dvt_search.data.resident"):
        resident = fit(resident_budget_gb=1.0)
        off = fit(resident_budget_gb=1e-6)  # 1 KiB: nothing fits, so the store path
    for a, b, c in zip(store, resident, off, strict=True):
        assert sorted(a) == sorted(b) == sorted(c) and "val_dice" in a
        for key in set(a) - {"wall_s", "img_per_s"}:
            assert a[key] == b[key] == c[key], key
    text = caplog.text
    assert f"resident data: train {len(train)} slices + val {len(val)} slices" in text
    assert "in host memory" in text
    assert "resident data off (train needs" in text and "reading from the store" in text
