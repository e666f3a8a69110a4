"""Loading selected checkpoints, counting their parameters and reaching the torch network inside a model."""

from __future__ import annotations

import os

from torch import nn

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

    Otherwise the family counts (:meth:`Family.count_parameters`); ``None`` when unknown (families without
    a network, such as SIFT): such models sort last in parameter tie-breaks.
    """
    meta = read_meta(directory)
    if isinstance(meta.get("n_params"), int):
        return int(meta["n_params"])
    return get_family(str(meta.get("family"))).count_parameters(directory)
