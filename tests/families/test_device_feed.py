"""Torch families train on compact batches finished on the device, and validate like ``evaluate`` does.

``fit`` wraps a ``SliceDataset`` in its compact view (int16 HU, a uint8 mask only for families whose loss
reads masks or patch targets) and the loop finishes each batch on the device; ``evaluate``/``predict``
read the reference items. Validation during ``fit`` must therefore agree with ``evaluate`` on the same
data (no augmentation on validation: the device path is exact there).
"""

from __future__ import annotations

import math

import pytest

from dvt_search import families
from dvt_search.data.compact import CompactSlices
from dvt_search.families.base import EpochReport, FitData
from dvt_search.families.torch_family import TorchFamily

TORCH = [n for n in families.names() if issubclass(families.get(n), TorchFamily)]
NEEDS_MASK = {"multitask_unet", "patch_resnet50"}


@pytest.mark.parametrize("name", TORCH)
def test_training_view_ships_a_mask_only_to_families_that_use_it(name: str, tiny) -> None:
    train, _, spec = tiny
    model = families.get(name).build({}, spec)
    view = model.training_view(train)
    assert isinstance(view, CompactSlices)
    assert ("packed" in view[0]) == (name in NEEDS_MASK)
    batch = view.batch_transform({k: v[None] for k, v in view[0].items()})
    assert ("patches" in batch) == (name == "patch_resnet50")
    assert ("mask" in batch) == (name in NEEDS_MASK)


@pytest.mark.parametrize("name", ["vgg16", "multitask_unet"])
def test_validation_during_fit_equals_evaluate(name: str, tiny) -> None:
    train, val, spec = tiny
    model = families.get(name).build({"batch_size": 8, **({"head": "gap"} if name == "vgg16" else {})}, spec)
    reports: list[EpochReport] = model.fit(FitData(train=train, val=val), 1)
    during = reports[-1].metrics
    after = model.evaluate(val, prefix="val_", device="cpu")
    for key in ("val_loss", "val_auc"):
        assert math.isclose(during[key], after[key], rel_tol=1e-5, abs_tol=1e-6), (key, during, after)
    if name == "multitask_unet":
        assert math.isclose(during["val_dice"], after["val_dice"], abs_tol=1e-6)
