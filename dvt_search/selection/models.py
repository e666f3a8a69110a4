"""Loading selected checkpoints and reaching the torch network inside a family's model."""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor, nn

from dvt_search.families import get as get_family
from dvt_search.families.base import Model, read_meta


def load_checkpoint(directory: str | os.PathLike[str]) -> Model:
    """Load any family's checkpoint directory (the family is read from its ``meta.json``)."""
    meta = read_meta(directory)
    family = meta.get("family")
    if not isinstance(family, str):
        raise ValueError(f"{directory}: meta.json names no family")
    return get_family(family).load(directory)


def torch_module(model: Model) -> nn.Module | None:
    """The bare ``nn.Module`` of a torch family's model (``None`` for classic families such as SIFT)."""
    module = getattr(model, "module", None)
    return module if isinstance(module, nn.Module) else None


def count_parameters(directory: str | os.PathLike[str]) -> int | None:
    """Trainable + frozen parameters of a checkpoint's network (``meta["n_params"]`` if recorded).

    ``None`` when unknown (classic families): such models sort last in parameter tie-breaks.
    """
    meta = read_meta(directory)
    if isinstance(meta.get("n_params"), int):
        return int(meta["n_params"])
    if get_family(str(meta.get("family"))).kind != "torch":
        return None
    module = torch_module(load_checkpoint(directory))
    return None if module is None else int(sum(p.numel() for p in module.parameters()))


class SliceProbability(nn.Module):
    """``[B, C, H, W]`` windowed images in [0, 1] -> ``[B]`` slice DVT probabilities.

    Wraps a family's network with the model's own output-to-probability map (``slice_scores``), so the
    exported graph scores exactly as :meth:`Model.predict` does.
    """

    def __init__(self, model: Model) -> None:
        super().__init__()
        module = torch_module(model)
        if module is None:
            raise TypeError(f"family {model.family!r} has no torch network to wrap")
        self.net = module
        self._scores = model.slice_scores  # type: ignore[attr-defined]

    def forward(self, x: Tensor) -> Tensor:
        out: Any = self.net(x)
        return self._scores(out).reshape(-1).float()
