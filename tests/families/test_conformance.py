"""Every registered family honours the contract of :mod:`dvt_search.families.base` (tiny CPU data).

Parametrized over ``families.names()``, so a newly registered family is tested automatically; a family
that needs cheaper-than-default knobs to stay fast here lists them in ``FAST``.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import pkgutil
import shutil
from pathlib import Path

import numpy as np
import pytest

from dvt_search import families
from dvt_search.data.io import load_slice
from dvt_search.data.schema import resolve
from dvt_search.families.base import EpochReport, Family, FitData, Model

REPO = Path(__file__).resolve().parents[2]

#: Cheaper knobs for the conformance run only (defaults stay the paper's).
FAST: dict[str, dict] = {
    "sift_bow_svm": {"k": 8},
    "vgg16": {"head": "gap", "batch_size": 8},
    "densenet161": {"batch_size": 8},
    "multitask_unet": {"batch_size": 8},
    "patch_resnet50": {"batch_size": 8},
    # the export check stacks unrelated validation slices as one "volume": without context slices the
    # cascade scores each slice alone there, as predict does (context is tested in test_vein_cascade.py)
    "vein_cascade": {"batch_size": 8, "context_slices": 0, "stage1_size": 32},
}


@pytest.fixture(scope="module", params=families.names())
def family(request: pytest.FixtureRequest) -> type[Family]:
    return families.get(request.param)


@pytest.fixture(scope="module")
def trained(family: type[Family], tiny) -> tuple[type[Family], Model, list[EpochReport], FitData]:
    train, val, spec = tiny
    model = family.build(FAST.get(family.name, {}), spec)
    data = FitData(train=train, val=val)
    seen: list[EpochReport] = []

    def stop_after_first(report: EpochReport, m: Model) -> bool:
        assert m is model
        seen.append(report)
        return True  # a True return stops training after this epoch

    reports = model.fit(data, 3, callback=stop_after_first)
    assert [r.epoch for r in reports] == [1] and seen == reports
    return family, model, reports, data


def test_fit_reports_and_predicts(trained) -> None:
    family, model, reports, data = trained
    assert model.epochs_done == 1
    metrics = reports[0].metrics
    assert "val_auc" in metrics and all(isinstance(v, float) for v in metrics.values())
    assert 0.0 <= metrics["val_auc"] <= 1.0 or math.isnan(metrics["val_auc"])
    if family.kind == "torch":
        assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    scores = model.predict(data.val)
    assert scores.shape == (len(data.val),) and scores.dtype == np.float64
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))


def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path: Path) -> None:
    family, model, _, data = trained
    path = model.save(tmp_path / "ckpt")
    assert (path / "meta.json").is_file()
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.pickle"))
    loaded = family.load(path)
    assert loaded.epochs_done == 1 and loaded.params == model.params
    np.testing.assert_allclose(loaded.predict(data.val), model.predict(data.val), rtol=0, atol=1e-6)


def _raw_hu(dataset) -> np.ndarray:
    """The dataset's slices as raw HU, straight from the files (what deployment gets from DICOM)."""
    return np.stack(
        [
            load_slice(resolve(dataset.root, r.image_path), int(r.image_index))
            for r in dataset.frame.itertuples()
        ]
    )


def test_export_then_open_export_scores_like_predict(trained, tmp_path: Path) -> None:
    """build -> fit -> export -> Family.open_export: the deployed scores are Model.predict's."""
    family, model, _, data = trained
    ckpt = model.save(tmp_path / "ckpt")
    out = tmp_path / "export"
    out.mkdir()
    for f in ckpt.iterdir():  # what deploy.export copies: the checkpoint less its training-only files
        if f.name not in model.training_only_files:
            shutil.copy2(f, out / f.name)
    info = model.export(out)
    assert "torchscript" in info and isinstance(info["onnx"]["ok"], bool)
    assert info["onnx"]["ok"] or info["onnx"]["error"]
    json.dumps(info, default=float)  # export.json can record it
    assert family.count_parameters(ckpt) == model.n_params()
    scorer = family.open_export(out, model.spec)
    hu = _raw_hu(data.val)
    got = scorer.scores(hu, batch_size=3)
    assert got.shape == (len(data.val),) and got.dtype == np.float64
    np.testing.assert_allclose(got, model.predict(data.val), rtol=0, atol=1e-5)
    maps = scorer.heatmaps(list(hu[:2]))
    assert isinstance(scorer.heatmap_method, str) and scorer.heatmap_method
    if maps is not None:
        size = model.spec.image_size
        assert maps.shape == (2, size, size) and np.all((maps >= 0) & (maps <= 1))
    veins = scorer.vein_fractions(list(hu[:3]))  # None exactly for the families without a vein detector
    assert (veins is not None) == getattr(model, "detects_veins", False)
    if veins is not None:
        assert veins.shape == (3,) and veins.dtype == np.float64 and np.all((veins >= 0) & (veins <= 1))


def test_unknown_param_raises_key_error(family: type[Family], tiny) -> None:
    with pytest.raises(KeyError, match="no_such_knob"):
        family.build({"no_such_knob": 1}, tiny[2])


def test_defaults_are_complete_and_family_has_a_search_space(family: type[Family]) -> None:
    assert family.kind in ("torch", "classic")
    defaults = family.default_params()
    assert family.resolve_params({}) == defaults
    assert (REPO / "search_spaces" / family.search_space_file()).is_file()


def test_duplicate_registration_raises() -> None:
    existing = families.get("vgg16")

    class Impostor(existing):  # type: ignore[misc, valid-type]
        pass

    with pytest.raises(ValueError, match="already registered"):
        families.register(Impostor)
    assert families.get("vgg16") is existing


def _family_classes_defined_in(module_name: str) -> list[str]:
    """Names of classes decorated with ``@register`` in a module's source."""
    source = Path(importlib.import_module(module_name).__file__).read_text()
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list
        ):
            out.append(node.name)
    return out


def test_registry_matches_the_modules_on_disk() -> None:
    package = Path(families.__file__).parent
    registering = set()
    for info in pkgutil.iter_modules([str(package)]):
        if _family_classes_defined_in(f"dvt_search.families.{info.name}"):
            registering.add(info.name)
    assert registering == set(families.BUILTIN_MODULES)
    # plug-ins registered by other tests (their modules live outside the package) are not built-ins
    builtin = [cls for cls in families.all_families() if cls.__module__.startswith("dvt_search.families.")]
    registered_modules = {cls.__module__.rsplit(".", 1)[-1] for cls in builtin}
    assert registered_modules == set(families.BUILTIN_MODULES)
    assert families.names()[: len(families.BUILTIN_MODULES)] == [
        families.get(n).name for n in families.names()[: len(families.BUILTIN_MODULES)]
    ]
    spaces = {p.stem for p in (REPO / "search_spaces").glob("*.yaml")}
    assert {cls.name for cls in builtin} <= spaces
