"""Every CNN family learns, on CPU, within about half a minute (slow tests; each stops at its first epoch
above the bar).

The data is synthetic and conspicuous on purpose: slices with two bright vessels on noisy tissue where
positives hold a dark clot inside one of them (the phantom's structure, enlarged). The from-scratch paper
networks cannot learn the slice-level clot of the EASY phantom in CPU minutes: measured at 64^2 with 640
training slices, 6 epochs (3,840 images, 140 s CPU), patch ResNet-50 reached a held-out-patient AUC of
0.56, and multitask / VGG-16 / DenseNet-161 runs of 1-2 CPU minutes stayed at 0.4-0.6, while a 4-layer
max-pooling CNN needs ~2,700 images for 0.78 (``bench/phantom_learnability.py``). Learning the phantom
is therefore a GPU-scale check, not a CI test.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dvt_search import families
from dvt_search.families.base import DataSpec, FitData

pytestmark = pytest.mark.slow


class ClotSlices(Dataset):
    """Contract-shaped slices: two bright vessels (the mask); positives have a dark clot in one."""

    def __init__(self, n: int, seed: int, size: int) -> None:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.images = 0.4 + 0.04 * torch.randn(n, 1, size, size, generator=g)
        self.masks = torch.zeros(n, 1, size, size)
        self.labels = (torch.arange(n) % 2).float()
        half, radius = size // 2, 0.07 * size
        for i in range(n):
            for k in range(2):  # one vessel per half ("leg"); the clot is in either
                cy = float(torch.randint(size // 5, size - size // 5, (1,), generator=g))
                cx = float(
                    torch.randint(size // 10 + half * k, half * (k + 1) - size // 10, (1,), generator=g)
                )
                r2 = (yy - cy) ** 2 + (xx - cx) ** 2
                vessel = r2 <= radius**2
                self.images[i, 0][vessel] = 0.75 + 0.03 * torch.randn(int(vessel.sum()), generator=g)
                self.masks[i, 0][vessel] = 1.0
                if self.labels[i] and k == i // 2 % 2:
                    self.images[i, 0][r2 <= (0.7 * radius) ** 2] = 0.0
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


#: (params, epochs) per family at 32^2 with batch 8: the paper's Adam at lr 1e-3 with a constant LR (its
#: / 10 per epoch would freeze learning after two epochs); VGG-16 in its smallest sensible form (BN, GAP
#: head: plain VGG-16 from scratch does not start learning in this budget). Measured here, 1 thread, CPU
#: seconds and last-epoch AUC: VGG-16 21 s 1.00, DenseNet-161 34 s 1.00, multitask 24 s 0.99, patch
#: ResNet-50 (4 epochs) 33 s 0.95.
CLOT_CONFIG: dict[str, tuple[dict, int]] = {
    "vgg16": ({"head": "gap", "batch_norm": True, "dropout": 0.0}, 3),
    "densenet161": ({}, 3),
    "multitask_unet": ({}, 3),
    "patch_resnet50": ({}, 4),
}
CLOT_SIZE = 32
#: the validation AUC a family must reach within its epochs
LEARNED_AUC = 0.7


@pytest.mark.parametrize("name", sorted(CLOT_CONFIG))
def test_learns_a_conspicuous_clot(name: str) -> None:
    params, epochs = CLOT_CONFIG[name]
    spec = DataSpec(image_size=CLOT_SIZE, pos_fraction=0.5, vein_fraction=0.03)
    model = families.get(name).build({**params, "batch_size": 8, "schedule": "none"}, spec)
    data = FitData(train=ClotSlices(192, 0, CLOT_SIZE), val=ClotSlices(64, 1, CLOT_SIZE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 1 x 1 patch grid at 32^2 has a single class: patch AUC nan
        # stops at the first epoch above the bar: the property is learning within `epochs`, and the epochs
        # after it (up to 3 of 4 here) only cost time
        reports = model.fit(data, epochs, callback=lambda r, _m: r.metrics["val_auc"] > LEARNED_AUC)
    aucs = [r.metrics["val_auc"] for r in reports]
    print(f"{name}: val AUC per epoch {[round(a, 3) for a in aucs]}")
    assert aucs[-1] > LEARNED_AUC and len(aucs) <= epochs, aucs
