"""Export and deployed scoring of the torch families: TorchScript + ONNX files, Grad-CAM of the eager net.

:func:`export_artefacts` (called by :meth:`TorchModel.export`) writes into an export folder

* ``model.ts`` — the traced :class:`SliceProbability` module: float32 ``[B, C, S, S]`` windowed images in
  [0, 1] -> ``[B]`` DVT probabilities, checked against eager on another batch size;
* ``model.onnx`` — the same graph in ONNX with a dynamic batch axis, where an exporter succeeds (a failure
  is recorded, logged and never fatal);

and returns the ``torchscript`` / ``onnx`` entries of ``export.json``. :class:`TorchScriptScorer` (returned
by :meth:`TorchFamily.open_export`) scores with ``model.ts`` and makes Grad-CAM maps with the eager
network rebuilt from the folder's ``meta.json`` + ``weights.pt`` (the same weights), because Grad-CAM needs
layer activations that a TorchScript graph does not expose; the same eager network gives the vein maps of
the families that have a vein detector (the scope check's per-slice vein fractions).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .base import DataSpec
from .deployed import context_stacks, network_inputs

if TYPE_CHECKING:
    from .torch_family import TorchFamily, TorchModel

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
#: a pixel / patch of a vein map counts as vein at this probability (:meth:`TorchScriptScorer.vein_fractions`)
VEIN_PROBABILITY = 0.5


class SliceProbability(nn.Module):
    """``[B, C, H, W]`` windowed images in [0, 1] -> ``[B]`` slice DVT probabilities.

    Wraps a family's network with the model's own output-to-probability map (``slice_scores``), so the
    exported graph scores exactly as :meth:`TorchModel.predict` does.
    """

    def __init__(self, model: TorchModel) -> None:
        super().__init__()
        self.net = model.module
        self._scores = model.slice_scores

    def forward(self, x: Tensor) -> Tensor:
        out: Any = self.net(x)
        return self._scores(out).reshape(-1).float()


def _example(model: TorchModel, batch: int) -> torch.Tensor:
    s, c = int(model.spec.image_size), int(model.spec.in_channels)
    return torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(batch))


def export_torchscript(model: TorchModel, path: Path) -> dict[str, Any]:
    """Trace the probability module to ``path`` and check it against eager on another batch size."""
    wrapper = SliceProbability(model).eval().cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace deprecation / tracer warnings are noise here
        traced = torch.jit.trace(wrapper, _example(model, 2))
        probe = _example(model, 3)
        diff = float((traced(probe) - wrapper(probe)).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(f"traced module differs from eager by {diff:.2e} on a batch of 3")
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream, still the format asked for
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(path))
    return {"method": "torch.jit.trace", "checked_batch_size": 3, "max_abs_diff": diff}


def export_onnx(model: TorchModel, path: Path) -> dict[str, Any]:
    """ONNX export with a dynamic batch axis; returns ``{"ok": False, "error": ...}`` instead of raising."""
    return onnx_export(SliceProbability(model).eval().cpu(), _example(model, 2), path)


def onnx_export(wrapper: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """``wrapper`` (image -> probability) to ONNX with a dynamic batch axis, the TorchScript-based exporter
    first, then dynamo; the ``export.json`` entry, ``{"ok": False, "error": ...}`` instead of raising."""
    import onnx

    attempts = (("torchscript-based", {"dynamo": False}), ("dynamo", {"dynamo": True}))
    errors = []
    for name, kwargs in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(path),
                    input_names=["image"],
                    output_names=["probability"],
                    dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    **kwargs,
                )
            onnx.checker.check_model(str(path))
            return {
                "ok": True,
                "exporter": name,
                "opset": ONNX_OPSET,
                "input": "image",
                "output": "probability",
            }
        except Exception as exc:  # any exporter failure is reported, not fatal
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
            for extra in path.parent.glob(f"{path.name}*.data"):
                extra.unlink()
    return {"ok": False, "error": "; ".join(errors)}


def export_artefacts(model: TorchModel, directory: Path) -> dict[str, Any]:
    """Write ``model.ts`` and (where it succeeds) ``model.onnx``; the ``export.json`` entries of both."""
    directory = Path(directory)
    info = {
        "torchscript": export_torchscript(model, directory / TORCHSCRIPT_FILE),
        "onnx": export_onnx(model, directory / ONNX_FILE),
    }
    if not info["onnx"]["ok"]:
        log.warning("%s: ONNX export failed: %s", model.family, info["onnx"]["error"])
    return info


class TorchScriptScorer:
    """An export folder of a torch family: ``model.ts`` scores, the eager network explains (Grad-CAM).

    The eager network (same weights) also answers where it sees veins, for families with a vein detector
    (:meth:`vein_fractions`): the TorchScript graph returns slice probabilities only.

    Args:
        family: the family class (rebuilds the eager network from the folder for heat maps).
        directory: the export folder.
        spec: input size and HU windows from ``preprocess.json``.
    """

    heatmap_method = "Grad-CAM of the eager network"

    def __init__(self, family: type[TorchFamily], directory: str | Path, spec: DataSpec) -> None:
        self.family = family
        self.directory = Path(directory)
        self.spec = spec
        self._model: TorchModel | None = None
        if not (self.directory / TORCHSCRIPT_FILE).is_file():
            raise FileNotFoundError(f"{self.directory}: no {TORCHSCRIPT_FILE} (not a torch-family export)")

    def _inputs(self, slices_hu: Any) -> np.ndarray:
        """Network inputs of 2-D slices or context stacks (:func:`.deployed.network_inputs`)."""
        return network_inputs(list(slices_hu), self.spec)

    def scores(self, volume_hu: np.ndarray, *, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
        """``float64[Z]`` probabilities of a ``[Z, H, W]`` HU volume from the TorchScript module.

        With context slices each slice's neighbours come from the whole volume (not from its batch).
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript deprecation notice
            net = torch.jit.load(str(self.directory / TORCHSCRIPT_FILE), map_location=device).eval()
        k = int(getattr(self.spec, "context_slices", 0))
        out = []
        with torch.inference_mode():
            for i in range(0, len(volume_hu), batch_size):
                idx = range(i, min(i + batch_size, len(volume_hu)))
                x = self._inputs(context_stacks(volume_hu, idx, k))
                out.append(net(torch.from_numpy(x).to(device)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _eager(self) -> TorchModel:
        """The eager model rebuilt from ``meta.json`` + ``weights.pt`` (on the CPU), loaded once."""
        if self._model is None:
            self._model = self.family.load(self.directory)
            self._model.module.cpu().eval()
        return self._model

    def heatmaps(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        """Grad-CAM maps ``[N, S, S]`` in [0, 1] of the eager network (on the CPU).

        Each element is a 2-D slice or, for a model with context, its ``[2k+1, H, W]`` stack
        (:func:`.deployed.context_stacks`).
        """
        if not slices_hu:
            return None
        from ..engine.cam import grad_cam

        x = torch.from_numpy(self._inputs(slices_hu))
        return grad_cam(self._eager().module, x).detach().cpu().numpy()

    def vein_fractions(self, slices_hu: list[np.ndarray], *, batch_size: int = 16) -> np.ndarray | None:
        """Per slice, the fraction of the model's vein map at or above :data:`VEIN_PROBABILITY`.

        The map is the eager network's :meth:`TorchModel.vein_map` (the segmentation head's pixels, the
        patch grid's cells), which covers the whole slice; ``None`` for a model without a vein detector
        (:attr:`TorchModel.detects_veins`), without running the network.
        """
        model = self._eager()
        if not model.detects_veins:
            return None
        out = []
        with torch.inference_mode():
            for i in range(0, len(slices_hu), batch_size):
                x = torch.from_numpy(self._inputs(slices_hu[i : i + batch_size]))
                veins = model.vein_map(model.module(x))
                if veins is None:
                    return None
                out.append((veins >= VEIN_PROBABILITY).flatten(1).double().mean(1).numpy())
        return np.concatenate(out) if out else np.zeros(0)
