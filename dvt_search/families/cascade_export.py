"""Export and deployed scoring of the vein cascade (``dvt-search export`` / ``predict --dicom``).

:func:`export_artefacts` writes ``model.ts``, the traced :class:`~.cascade_parts.CascadeProbability` (the
whole cascade: float32 ``[B, (2k+1)*C, S, S]`` context stacks at the native side ``S`` -> ``[B]``
probabilities, checked against eager on another batch), and ``model.onnx`` where an exporter succeeds
(a failure is recorded, never fatal). :class:`CascadeScorer` scores a ``[Z, H, W]`` HU volume with
``model.ts`` after building the context stacks of :func:`~.cascade_data.volume_stacks`; heat maps are the
crop evidence (each candidate crop's clot probability over its square) of the eager cascade rebuilt from
the folder's ``meta.json`` + ``weights.pt``, and vein fractions come from its stage 1.

Heat maps need each slice's neighbours: a slice of the volume last passed to :meth:`CascadeScorer.scores`
(what ``predict`` does: score the series, then explain its positive slices) takes them from that volume;
any other slice is used as its own context.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .base import DataSpec
from .cascade_data import volume_stacks
from .cascade_parts import CascadeProbability, downsample, evidence_maps

if TYPE_CHECKING:
    from .vein_cascade import VeinCascade, VeinCascadeModel

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"
#: a stage-1 pixel counts as vein at this probability (:meth:`CascadeScorer.vein_fractions`)
VEIN_PROBABILITY = 0.5


def _example(model: VeinCascadeModel, batch: int) -> torch.Tensor:
    s = model.native_size
    c = model.module.stack_channels
    return torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(batch))


def export_torchscript(model: VeinCascadeModel, path: Path) -> dict[str, Any]:
    """Trace the cascade to ``path`` and check it against eager on another batch size."""
    wrapper = CascadeProbability(model.module).eval().cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, _example(model, 2), check_trace=False)
        probe = _example(model, 3)
        diff = float((traced(probe) - wrapper(probe)).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(f"traced cascade differs from eager by {diff:.2e} on a batch of 3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(path))
    return {"method": "torch.jit.trace", "checked_batch_size": 3, "max_abs_diff": diff}


def export_onnx(model: VeinCascadeModel, path: Path) -> dict[str, Any]:
    """ONNX export with a dynamic batch axis; ``{"ok": False, "error": ...}`` instead of raising."""
    from .torch_export import onnx_export

    return onnx_export(CascadeProbability(model.module).eval().cpu(), _example(model, 2), path)


def export_artefacts(model: VeinCascadeModel, directory: Path) -> dict[str, Any]:
    """Write ``model.ts`` and (where it succeeds) ``model.onnx``; the ``export.json`` entries of both."""
    info = {
        "torchscript": export_torchscript(model, directory / TORCHSCRIPT_FILE),
        "onnx": export_onnx(model, directory / ONNX_FILE),
    }
    if not info["onnx"]["ok"]:
        log.warning("%s: ONNX export failed: %s", model.family, info["onnx"]["error"])
    return info


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


class CascadeScorer:
    """An export folder of the cascade: ``model.ts`` scores, the eager cascade explains and finds veins.

    Args:
        family: the cascade family class (rebuilds the eager model from the folder).
        directory: the export folder.
        spec: native side and HU windows from ``preprocess.json``.
    """

    heatmap_method = (
        "crop evidence of the eager cascade (each candidate crop's clot probability over its square)"
    )

    def __init__(self, family: type[VeinCascade], directory: str | Path, spec: DataSpec) -> None:
        self.family = family
        self.directory = Path(directory)
        self.spec = spec
        self._model: VeinCascadeModel | None = None
        self._last: np.ndarray | None = None
        self._last_index: dict[str, int] = {}
        if not (self.directory / TORCHSCRIPT_FILE).is_file():
            raise FileNotFoundError(f"{self.directory}: no {TORCHSCRIPT_FILE} (not a vein_cascade export)")

    def _eager(self) -> VeinCascadeModel:
        if self._model is None:
            model = self.family.load(self.directory)
            model.module.cpu().eval()
            self._model = model  # type: ignore[assignment]
        return self._model  # type: ignore[return-value]

    @property
    def _context(self) -> int:
        return int(self._eager().module.context)

    def scores(self, volume_hu: np.ndarray, *, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
        """``float64[Z]`` probabilities of a ``[Z, H, W]`` HU volume (context from the volume itself)."""
        volume_hu = np.asarray(volume_hu)
        self._last = volume_hu
        self._last_index = {_digest(s): i for i, s in enumerate(volume_hu)}
        stacks = volume_stacks(volume_hu, self.spec.image_size, self.spec.windows, self._context)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(self.directory / TORCHSCRIPT_FILE), map_location=device).eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(stacks), batch_size):
                out.append(
                    net(torch.from_numpy(stacks[i : i + batch_size]).to(device)).double().cpu().numpy()
                )
        return np.concatenate(out) if out else np.zeros(0)

    def _stacks(self, slices_hu: list[np.ndarray]) -> np.ndarray:
        """Context stacks of ``slices_hu``: neighbours from the last scored volume where the slice is in it."""
        k, size, windows = self._context, self.spec.image_size, self.spec.windows
        out = []
        for s in slices_hu:
            s = np.asarray(s)
            if s.ndim == 3:  # a [2k+1, H, W] context stack (deploy.predict hands these): slice-major channels
                out.append(volume_stacks(list(s), size, windows, 0).reshape(-1, size, size))
                continue
            i = self._last_index.get(_digest(s)) if self._last is not None else None
            if i is None:
                out.append(volume_stacks([s], size, windows, k)[0])
            else:
                lo, hi = max(0, i - k), min(len(self._last), i + k + 1)
                local = volume_stacks(self._last[lo:hi], size, windows, k)
                out.append(local[i - lo])
        return np.stack(out)

    def heatmaps(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        """Crop-evidence maps ``[N, S, S]`` in [0, 1] (zero where no candidate was cropped) of 2-D slices or stacks."""
        if not slices_hu:
            return None
        model = self._eager()
        with torch.inference_mode():
            out = model.module(torch.from_numpy(self._stacks(slices_hu)))
        return evidence_maps(out, self.spec.image_size, model.module.crop_size).numpy()

    def vein_fractions(self, slices_hu: list[np.ndarray], *, batch_size: int = 16) -> np.ndarray | None:
        """Per slice (2-D, or a stack's centre), the fraction of stage 1's map at or above :data:`VEIN_PROBABILITY`."""
        model = self._eager()
        out = []
        with torch.inference_mode():
            for i in range(0, len(slices_hu), batch_size):
                # centre slices: stage 1 sees one slice (a [2k+1, H, W] stack gives its middle one)
                chunk = [
                    np.asarray(c)[len(c) // 2] if np.ndim(c) == 3 else c
                    for c in slices_hu[i : i + batch_size]
                ]
                x = torch.from_numpy(volume_stacks(chunk, self.spec.image_size, self.spec.windows, 0))
                seg = model.module.stage1(downsample(x, model.module.stage1_size))
                out.append((torch.sigmoid(seg[:, 0]) >= VEIN_PROBABILITY).flatten(1).double().mean(1).numpy())
        return np.concatenate(out) if out else np.zeros(0)
