"""Every CNN family learns, on CPU, within about a minute (slow tests).

Two kinds of signal, because the from-scratch paper networks cannot learn the slice-level clot of the
phantom in CPU minutes (measured on the easy phantom at 64^2, 640 training slices, 6 epochs = 3,840
images, 140 s CPU: patch ResNet-50 validation AUC 0.56; a 4-layer max-pooling CNN needs ~2,700 images
for 0.78, see ``bench/phantom_learnability.py``):

* ``test_learns_a_conspicuous_clot``: slices with two bright vessels on noisy tissue where positives hold
  a dark clot inside one vessel (the phantom's structure, enlarged to ~9 px vessels so that 2-4 epochs of
  128 slices suffice). Validation AUC on fresh slices must be clearly above chance.
* ``test_learns_phantom_veins``: the vein signal of the EASY phantom (held-out patients), which the
  families with vein outputs learn quickly: multitask segmentation Dice and patch vein-detection AUC.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dvt_search import families
from dvt_search.families.base import DataSpec, FitData

pytestmark = pytest.mark.slow

SIZE = 64


class ClotSlices(Dataset):
    """Contract-shaped slices: two bright vessels (the mask); positives have a dark clot in one."""

    def __init__(self, n: int, seed: int, size: int) -> None:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.images = 0.35 + 0.05 * torch.randn(n, 1, size, size, generator=g)
        self.masks = torch.zeros(n, 1, size, size)
        self.labels = (torch.arange(n) % 2).float()
        half, radius = size // 2, 0.07 * size
        for i in range(n):
            for k in range(2):  # one vessel per half ("leg"); the clot is in either
                cy = float(torch.randint(size // 5, size - size // 5, (1,), generator=g))
                cx = float(torch.randint(size // 10 + half * k, half * (k + 1) - size // 10, (1,), generator=g))
                r2 = (yy - cy) ** 2 + (xx - cx) ** 2
                vessel = r2 <= radius**2
                self.images[i, 0][vessel] = 0.75 + 0.03 * torch.randn(int(vessel.sum()), generator=g)
                self.masks[i, 0][vessel] = 1.0
                if self.labels[i] and k == i // 2 % 2:
                    self.images[i, 0][r2 <= (0.7 * radius) ** 2] = 0.3
        self.images.clamp_(0, 1)
        self.patches = torch.nn.functional.adaptive_max_pool2d(self.masks, -(-size // 32))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "image": self.images[i],
            "mask": self.masks[i],
            "patches": self.patches[i],
            "label": self.labels[i],
            "index": torch.tensor(i),
        }


#: (params, image size, epochs) per family: the paper's optimiser with a constant LR (its / 10 per epoch
#: would freeze learning after two epochs), batch 16, and the smallest sensible size / head.
CLOT_CONFIG: dict[str, tuple[dict, int, int]] = {
    "vgg16": ({"head": "gap", "batch_norm": True, "dropout": 0.0}, 64, 3),
    "densenet161": ({}, 32, 3),
    "multitask_unet": ({}, 64, 3),
    "patch_resnet50": ({}, 64, 3),
}


@pytest.mark.parametrize("name", sorted(CLOT_CONFIG))
def test_learns_a_conspicuous_clot(name: str) -> None:
    torch.set_num_threads(2)
    params, size, epochs = CLOT_CONFIG[name]
    spec = DataSpec(image_size=size, pos_fraction=0.5, vein_fraction=0.03)
    model = families.get(name).build({**params, "batch_size": 16, "schedule": "none"}, spec)
    data = FitData(train=ClotSlices(128, 0, size), val=ClotSlices(64, 1, size))
    aucs = [r.metrics["val_auc"] for r in model.fit(data, epochs)]
    print(f"{name}: val AUC per epoch {[round(a, 3) for a in aucs]}")
    assert aucs[-1] > 0.7, aucs


def test_learns_phantom_veins(learn_sets) -> None:
    """Held-out-patient vein segmentation (multitask) and vein-patch detection (patch ResNet-50)."""
    torch.set_num_threads(2)
    train, val, spec = learn_sets(SIZE)
    mt = families.get("multitask_unet").build({"batch_size": 16, "schedule": "none"}, spec)
    dice = [r.metrics["val_dice"] for r in mt.fit(FitData(train=train, val=val), 3)]
    assert max(dice) > 0.2, dice
    assert all(math.isfinite(d) for d in dice)
