"""Atomic checkpoint directories and pickle-free tensor files.

A checkpoint directory is built next to its target under a temporary name and swapped in only when
complete, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` when the block succeeds.

    An existing ``target`` is moved aside and deleted only after the new one is in place; on error the
    temporary directory is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
