"""A new non-torch family gets working defaults from the base classes: one module, nothing else to touch.

``MeanIntensity`` implements only the abstract methods (a one-number "model": the mean windowed
intensity, rescaled by a fitted offset). Registered as a plug-in, it must be counted, exported, opened
for deployment and scored there exactly as :meth:`Model.predict` scores, with no hook overridden.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from dvt_search import families
from dvt_search.data.io import load_slice
from dvt_search.data.schema import resolve
from dvt_search.families.base import DataSpec, EpochReport, Family, FitData, Model, read_meta


class MeanModel(Model):
    family: ClassVar[str] = "mean_intensity_test"

    def __init__(self, params: Mapping[str, Any], spec: DataSpec) -> None:
        super().__init__(params, spec)
        self.offset = 0.0

    def fit(self, data: FitData, epochs: int, callback: Any = None, **kwargs: Any) -> list[EpochReport]:
        self.offset = float(np.mean([data.train[i]["image"].mean() for i in range(len(data.train))]))
        report = EpochReport(1, {"val_auc": 0.5})
        self.epochs_done, self.history = 1, [report]
        return [report]

    def predict(self, dataset: Any) -> np.ndarray:
        means = np.array([float(dataset[i]["image"].mean()) for i in range(len(dataset))])
        return np.clip(0.5 + means - self.offset, 0.0, 1.0)

    def save(self, directory: str | Path) -> Path:
        self.write_meta(Path(directory))
        (Path(directory) / "offset.json").write_text(json.dumps(self.offset))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> MeanModel:
        meta = read_meta(directory)
        model = cls(meta["params"], DataSpec.from_dict(meta["spec"]))
        model.offset = float(json.loads((Path(directory) / "offset.json").read_text()))
        model.epochs_done = int(meta["epochs_done"])
        return model


class MeanIntensity(Family):
    name: ClassVar[str] = "mean_intensity_test"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"seed": 0}

    @classmethod
    def build(cls, params: Mapping[str, Any], spec: DataSpec) -> MeanModel:
        return MeanModel(cls.resolve_params(params), spec)

    @classmethod
    def load(cls, directory: str | Path) -> MeanModel:
        return MeanModel.load(directory)


@pytest.fixture
def plugin():
    families.register(MeanIntensity)
    yield families.get(MeanIntensity.name)
    families.unregister(MeanIntensity.name)


def test_base_defaults_serve_a_new_non_torch_family(plugin, tiny, tmp_path: Path) -> None:
    train, val, spec = tiny
    model = plugin.build({}, spec)
    model.fit(FitData(train=train, val=val), 1, **plugin.fit_options(device="cpu", cpus=1, use_cache=True))
    needs = plugin.trial_needs(max_epochs=5, cpus=2, gpus=1, train_workers=2, trainer="ray-train")
    assert (needs.budget, needs.trainer, needs.workers, needs.gpus) == (1, "direct", 1, 0.0)
    ckpt = model.save(tmp_path / "ckpt")
    assert model.n_params() is None and plugin.count_parameters(ckpt) is None

    from dvt_search.deploy.preprocess import preprocess_spec

    assert preprocess_spec(model)["sift_input"] is None  # the format keeps its key
    out = tmp_path / "export"
    shutil.copytree(ckpt, out)
    info = model.export(out)
    assert (
        info["torchscript"] is None
        and not info["onnx"]["ok"]
        and "not a neural network" in info["onnx"]["error"]
    )

    scorer = plugin.open_export(out, spec)
    hu = np.stack(
        [load_slice(resolve(val.root, r.image_path), int(r.image_index)) for r in val.frame.itertuples()]
    )
    np.testing.assert_allclose(scorer.scores(hu), model.predict(val), rtol=0, atol=1e-12)
    assert scorer.heatmaps(list(hu[:2])) is None and "none" in scorer.heatmap_method

    from dvt_search.deploy.predict import Exported

    deployed = Exported(out, plugin.name, plugin.kind, preprocess_spec(model), threshold=0.5)
    np.testing.assert_allclose(deployed.scores(hu), model.predict(val), rtol=0, atol=1e-12)
    assert deployed.heatmaps(list(hu[:1])) is None
