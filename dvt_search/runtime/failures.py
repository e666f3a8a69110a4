"""Trial failures that must not be retried: reported as the trial's one last result, not raised.

Two kinds: a node that does not see the run directory (:mod:`.storage`), and a CUDA out-of-memory error.
Retrying either is wasted time: the same node still lacks the mount, the same batch still does not fit
the same GPU share (an OOM retried by ``--max-failures`` burns GPU time for the same error). So the Tune
function catches them and reports one result holding the message under its key (:data:`FATAL_KEYS`), the
metric NaN and the epochs done, then returns: Tune sees a finished trial (no retry, no traceback), the
driver records it ``failed`` with the message (:class:`~.callbacks.RecordsCallback`), and the searcher
tells Optuna FAIL (:class:`~.searcher.OptunaStudySearcher`), also when earlier epochs reported values.

The OOM message names the family, the batch size, the image size, the GPU share the trial held, the
memory measured for that configuration (``--gpus-per-trial auto``: :mod:`.packing`) and the peak the
failing process reached.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .storage import STORAGE_ERROR_KEY

#: Result key of a trial that ran out of GPU memory (its value: the message).
OOM_ERROR_KEY = "oom_error"
#: Start of every OOM message (how a Ray Train worker's OOM is recognised in Train's error).
OOM_TAG = "out of GPU memory"
#: Result keys whose presence ends a trial as ``failed`` without a retry.
FATAL_KEYS = (STORAGE_ERROR_KEY, OOM_ERROR_KEY)

GIB = float(1024**3)


def fatal_error(result: Mapping[str, Any] | None) -> str | None:
    """The message of a not-retried failure a result reports, or ``None``."""
    for key in FATAL_KEYS:
        if result and result.get(key):
            return str(result[key])
    return None


def fatal_result(key: str, message: str, metric: str, epoch: int = 0) -> dict[str, Any]:
    """The one result a trial reports for such a failure (the metric NaN: Tune requires it)."""
    return {key: message, metric: math.nan, "epoch": int(epoch)}


def _peak_text() -> str:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
            return (
                f"; this process peaked at {torch.cuda.max_memory_allocated() / GIB:.2f} GiB of the "
                f"{total / GIB:.2f} GiB GPU"
            )
    except Exception:  # noqa: BLE001 - the message stays useful without the peak
        pass
    return ""


def oom_message(
    family: str, batch_size: Any, image_size: int, gpus: float, need_bytes: int | None, error: BaseException
) -> str:
    """The message of a trial that ran out of GPU memory (see the module docstring)."""
    need = (
        f"measured need {need_bytes / GIB:.2f} GiB"
        if need_bytes is not None
        else "need not measured (--gpus-per-trial auto measures it)"
    )
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return (
        f"{OOM_TAG}: {family} at batch size {batch_size}, {image_size}x{image_size} input, "
        f"holding {gpus:g} GPU; {need}{_peak_text()} ({first}). Not retried: lower the batch size or the "
        "image size, or give trials a larger GPU share (--gpus-per-trial, or auto)"
    )


def oom_text(exc: BaseException) -> str | None:
    """The OOM message inside ``exc`` (e.g. a Ray Train failure of a worker), if any."""
    text = str(exc)
    at = text.find(OOM_TAG)
    if at < 0:
        return None
    return text[at:].split("\n", 1)[0].strip()
