"""Model-family registry: ``register`` (a class decorator), ``get``, ``names``, ``all_families``.

The five families of the paper and the vein cascade beyond it live in one module each and register
themselves on import; a duplicate name raises. ``dvt-search families`` lists them with their search-space
files.

Adding a family: one module here (a :class:`~.base.Family` + :class:`~.base.Model`, ``@register``; a torch
family subclasses :class:`~.torch_family.TorchFamily` / ``TorchModel`` and gets training, checkpoints,
TorchScript/ONNX export and deployed scoring), its ``search_spaces/<name>.yaml``, and its module name in
:data:`BUILTIN_MODULES` (a plug-in registered from elsewhere needs no registry line). Everything a caller
needs to know differently is a hook with a default in :mod:`.base`.
"""

from __future__ import annotations

import importlib

from .base import DataSpec, EpochReport, ExportedScorer, Family, FitData, FitError, Model, TrialNeeds

_REGISTRY: dict[str, type[Family]] = {}

#: Modules that define the built-in families (imported lazily on first registry access).
BUILTIN_MODULES = ("sift_bow_svm", "vgg16", "densenet161", "multitask_unet", "patch_resnet50", "vein_cascade")
_loaded = False


def register(cls: type[Family]) -> type[Family]:
    """Class decorator adding a family to the registry; raises ``ValueError`` on a duplicate name."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise ValueError(f"{cls.__qualname__} has no string 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"a family named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a family (for tests and plug-ins)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in BUILTIN_MODULES:
            importlib.import_module(f"{__name__}.{mod}")


def get(name: str) -> type[Family]:
    """The family class registered as ``name``; ``KeyError`` lists the known names."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    """Registered family names in the paper's order, then any plug-ins alphabetically."""
    _load_builtins()
    order = {n: i for i, n in enumerate(BUILTIN_MODULES)}
    return sorted(_REGISTRY, key=lambda n: (order.get(n, len(order)), n))


def all_families() -> list[type[Family]]:
    return [get(n) for n in names()]


__all__ = [
    "DataSpec",
    "EpochReport",
    "ExportedScorer",
    "Family",
    "FitData",
    "FitError",
    "Model",
    "TrialNeeds",
    "all_families",
    "get",
    "names",
    "register",
    "unregister",
]
