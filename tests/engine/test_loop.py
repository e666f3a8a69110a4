"""The shared loop: schedules, NaN handling, metrics, exact resume (a tiny real CNN on CPU)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from dvt_search.engine.optim import LoopConfig, lr_factor
from dvt_search.families.base import DataSpec, FitData, FitError
from dvt_search.families.torch_family import TorchModel, slice_bce

SIZE = 16


class ToyDataset(Dataset):
    """Slices following the dataset contract; positives hold a bright square. ``nan_at`` poisons one."""

    def __init__(self, n: int, seed: int, nan_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=g)
        self.labels = torch.arange(n) % 2
        for i in range(n):
            if self.labels[i]:
                y, x = torch.randint(0, SIZE - 4, (2,), generator=g).tolist()
                self.images[i, :, y : y + 4, x : x + 4] = 1.0
        if nan_at is not None:
            self.images[nan_at, 0, 0, 0] = float("nan")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "image": self.images[i],
            "mask": torch.zeros(1, SIZE, SIZE),
            "patches": torch.zeros(1, 1, 1),
            "label": self.labels[i].float(),
            "index": torch.tensor(i),
        }


class ToyNet(nn.Module):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logit": self.head(self.features(x).amax(dim=(2, 3)))[:, 0]}

    def cam_layer(self) -> nn.Module:
        return self.features


class ToyModel(TorchModel):
    family = "toy"

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        return ToyNet(params["dropout"])

    def compute_loss(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return slice_bce(outputs, batch)


SPEC = DataSpec(image_size=SIZE)
PARAMS = {
    "lr": 0.01,
    "weight_decay": 0.0,
    "batch_size": 8,
    "schedule": "step",
    "step_size": 1,
    "step_gamma": 0.5,
    "cosine_eta_min": 0.0,
    "warmup_epochs": 0,
    "max_epochs": 10,
    "grad_clip": 1.0,
    "seed": 3,
    "dropout": 0.3,
}


def data(nan_at: int | None = None) -> FitData:
    return FitData(train=ToyDataset(40, 0, nan_at), val=ToyDataset(20, 1))


def test_lr_schedules() -> None:
    step = LoopConfig(schedule="step", step_gamma=0.1, step_size=1)
    assert [lr_factor(e, step) for e in range(3)] == pytest.approx([1.0, 0.1, 0.01])
    step2 = LoopConfig(schedule="step", step_gamma=0.5, step_size=2)
    assert [lr_factor(e, step2) for e in range(4)] == pytest.approx([1, 1, 0.5, 0.5])
    cos = LoopConfig(schedule="cosine", max_epochs=4, cosine_eta_min=0.1)
    assert lr_factor(0, cos) == 1.0 and lr_factor(4, cos) == pytest.approx(0.1)
    assert lr_factor(2, cos) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(9, cos) == pytest.approx(0.1)  # past the horizon: stays at the floor
    warm = LoopConfig(schedule="none", warmup_epochs=3)
    assert [lr_factor(e, warm) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])


@pytest.mark.parametrize(
    ("field", "value"), [("schedule", "linear"), ("lr", 0.0), ("step_gamma", 1.5), ("batch_size", 0)]
)
def test_loop_config_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        LoopConfig(**{field: value})


def test_metrics_of_an_epoch_and_learning() -> None:
    model = ToyModel(PARAMS, SPEC)
    reports = model.fit(data(), 3)
    assert [r.epoch for r in reports] == [1, 2, 3]
    m = reports[-1].metrics
    for key in (
        "train_loss",
        "val_loss",
        "val_auc",
        "val_precision",
        "val_recall",
        "val_threshold",
        "wall_s",
    ):
        assert math.isfinite(m[key]), key
    assert m["img_per_s"] > 0
    assert [r.metrics["lr"] for r in reports] == pytest.approx([0.01, 0.005, 0.0025])
    assert m["val_auc"] > 0.8  # a bright square is trivially learnable


def test_nan_loss_raises_fit_error_naming_epoch_and_batch() -> None:
    model = ToyModel(PARAMS, SPEC)
    with pytest.raises(FitError, match=r"epoch 1, batch \d+"):
        model.fit(data(nan_at=0), 1)


def test_resume_reproduces_an_uninterrupted_run(tmp_path) -> None:
    straight = ToyModel(PARAMS, SPEC)
    straight.fit(data(), 3)
    first = ToyModel(PARAMS, SPEC)
    first.fit(data(), 1)
    resumed = ToyModel.load(first.save(tmp_path / "ckpt"))
    assert resumed.epochs_done == 1 and len(resumed.history) == 1
    resumed.fit(data(), 3)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.module.state_dict().values(), resumed.module.state_dict().values()):
        assert torch.equal(a, b)
    assert [r.metrics["lr"] for r in resumed.history] == [r.metrics["lr"] for r in straight.history]
    np.testing.assert_array_equal(straight.predict(data().val), resumed.predict(data().val))


def test_fit_rejects_data_that_does_not_match_the_spec() -> None:
    model = ToyModel(PARAMS, DataSpec(image_size=SIZE * 2))
    with pytest.raises(ValueError, match="data spec"):
        model.fit(data(), 1)


def test_save_replaces_atomically_and_load_checks_family(tmp_path) -> None:
    model = ToyModel(PARAMS, SPEC)
    target = tmp_path / "ckpt"
    model.save(target)
    model.fit(data(), 1)
    model.save(target)
    assert sorted(p.name for p in target.iterdir()) == ["meta.json", "train_state.pt", "weights.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary leftovers

    class Other(ToyModel):
        family = "other"

    with pytest.raises(ValueError, match="family 'toy'"):
        Other.load(target)


def test_ddp_hooks_with_a_real_process_group(tmp_path) -> None:
    """The runtime's hooks (DDP wrapper, distributed sampler) with a one-rank gloo process group."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    wrapped: list[nn.Module] = []

    def prepare_model(module: nn.Module) -> nn.Module:
        wrapped.append(DistributedDataParallel(module))
        return wrapped[-1]

    def prepare_loader(loader: DataLoader) -> DataLoader:
        sampler = DistributedSampler(loader.dataset, shuffle=True, seed=0)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = ToyModel(PARAMS, SPEC)
        reports = model.fit(data(), 2, prepare_model=prepare_model, prepare_loader=prepare_loader)
    finally:
        dist.destroy_process_group()
    assert len(wrapped) == 1 and wrapped[0].module is model.module
    assert [r.epoch for r in reports] == [1, 2] and math.isfinite(reports[-1].metrics["val_auc"])
    assert not any(k.startswith("module.") for k in model.module.state_dict())


@pytest.mark.gpu
def test_cuda_bf16_channels_last_and_cpu_reload(tmp_path) -> None:
    model = ToyModel(PARAMS, SPEC)
    reports = model.fit(data(), 2, device="cuda")
    assert next(model.module.parameters()).is_cuda
    assert math.isfinite(reports[-1].metrics["train_loss"])
    loaded = ToyModel.load(model.save(tmp_path / "ckpt"))
    cpu = loaded.predict(data().val, device="cpu")
    np.testing.assert_allclose(cpu, model.predict(data().val), atol=0.05)


def test_resume_from_weights_only_keeps_the_schedule_position(tmp_path) -> None:
    """A lean (weights-only) checkpoint resumes with fresh Adam moments but the lr of its epoch."""
    straight = ToyModel(PARAMS, SPEC)
    straight.fit(data(), 3)
    first = ToyModel(PARAMS, SPEC)
    first.fit(data(), 1)
    ckpt = first.save(tmp_path / "ckpt")
    (ckpt / "train_state.pt").unlink()
    resumed = ToyModel.load(ckpt)
    assert resumed.train_state is None
    resumed.fit(data(), 3)
    assert [r.metrics["lr"] for r in resumed.history] == [r.metrics["lr"] for r in straight.history]
