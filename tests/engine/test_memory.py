"""GPU packing arithmetic (measured need -> the share of a GPU one trial reserves), with real sizes.

H100 80GB: ``torch.cuda.get_device_properties(0).total_memory`` = 85,029,158,912 bytes (79.19 GiB).
"""

from __future__ import annotations

import pytest
import torch

from dvt_search.engine.memory import (
    DEFAULT_OVERHEAD_BYTES,
    GIB,
    PackingError,
    gpu_share,
    probe_peak_bytes,
)

H100 = 85_029_158_912


@pytest.mark.parametrize(
    ("need_gib", "share"),
    [
        (9.0, 0.1428),  # 9 x 1.15 + 0.75 = 11.1 GiB per trial: 7 fit -> 1/7, rounded down to 4 decimals
        (20.0, 0.3333),  # 23.75 GiB per trial: 3 fit
        (33.0, 0.5),  # 38.7 GiB: 2 fit
        (60.0, 1.0),  # 69.75 GiB: only alone
        (0.1, 0.125),  # tiny: capped at 8 trials per GPU
    ],
)
def test_share_is_the_largest_k_that_fits(need_gib: float, share: float) -> None:
    got = gpu_share(need_gib * GIB, H100)
    assert got == share
    k = round(1 / got)
    assert k * got <= 1.0  # Ray can place k such trials on one GPU
    per_trial = need_gib * GIB * 1.15 + DEFAULT_OVERHEAD_BYTES
    assert k * per_trial <= H100 and (k == 8 or (k + 1) * per_trial > H100)


def test_exact_fit_and_margin() -> None:
    per_trial = 10 * GIB
    gpu = 4 * per_trial
    need = (per_trial - DEFAULT_OVERHEAD_BYTES) / 1.15
    assert gpu_share(need, gpu) == 0.25  # exactly four fit
    assert gpu_share(need * 1.001, gpu) == 0.3333  # a byte more each: three
    assert gpu_share(need, gpu, margin=0.0, overhead_bytes=0) == 0.25  # 4 x need < gpu < 5 x need
    assert gpu_share(need, gpu, max_trials=2) == 0.5


def test_a_trial_that_never_fits_names_its_need() -> None:
    with pytest.raises(PackingError) as exc:
        gpu_share(70 * GIB, H100, what="densenet161 at batch size 32, 512x512")
    text = str(exc.value)
    assert "densenet161 at batch size 32, 512x512 needs 81.25 GiB" in text and "79.19 GiB" in text
    with pytest.raises(ValueError, match="bad packing inputs"):
        gpu_share(1.0, 0.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU answer")
def test_probe_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        probe_peak_bytes(object(), 4, device="cpu")


@pytest.mark.gpu
def test_probe_counts_weights_gradients_adam_and_activations() -> None:
    """On a GPU: the peak exceeds weights + grads + two Adam moments, and grows with the batch."""
    from dvt_search import families
    from dvt_search.data.spec import DataSpec

    spec = DataSpec(image_size=128)
    small = families.get("multitask_unet").build({"batch_size": 2}, spec)
    states = 4 * sum(p.numel() * p.element_size() for p in small.module.parameters())
    peak2 = probe_peak_bytes(small, 2)
    peak16 = probe_peak_bytes(families.get("multitask_unet").build({"batch_size": 16}, spec), 16)
    assert states < peak2 < peak16


@pytest.mark.parametrize("name", ["multitask_unet", "vgg16"])
def test_probe_batch_is_at_the_models_own_input(name: str) -> None:
    """The probe's synthetic batch has the model's own input size and context slices (CPU check of what
    the GPU probe feeds): a batch at the run's size or without the context channels would not fit."""
    from dvt_search import families
    from dvt_search.data.device_transform import DeviceTransform
    from dvt_search.data.spec import DataSpec
    from dvt_search.engine.memory import synthetic_compact_batch

    model = families.get(name).build(
        {"batch_size": 2, "input_size": 64, "context_slices": 1}, DataSpec(image_size=128)
    )
    spec = model.spec
    raw = synthetic_compact_batch(model, 2, torch.device("cpu"))
    assert raw["hu"].shape == (2, 3, 64, 64)
    finish = DeviceTransform(64, spec.windows, None, mask=model.uses_masks, centre=spec.context_slices)
    image = finish(raw)["image"]
    assert image.shape == (2, spec.in_channels, 64, 64)
    with torch.no_grad():
        model.module.eval()(image)
