"""Pickle-free tensor files of checkpoints (atomic directories: :func:`dvt_search.fsutil.atomic_directory`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def cpu_state(obj: Any) -> Any:
    """A copy of a (nested) state dict with every tensor detached and on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_state(v) for v in obj)
    return obj


def load_tensors(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``), onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises several types; name the file
        raise ValueError(f"{path}: not a loadable weights-only torch file ({exc})") from exc
