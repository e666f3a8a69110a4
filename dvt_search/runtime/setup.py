"""What every trial of a family needs besides its hyperparameters (plain data, no Ray).

:class:`TrialSetup` travels inside each trial's Tune config (``config["run"]``); it is a handful of
strings and numbers, so Tune's experiment snapshot stays small and a resumed driver rebuilds identical
trials. Datasets are never shipped: each worker process opens them from the shared filesystem (volume
``.npy`` files are memory-mapped, so trials on one node share the page cache) and keeps them in a
per-process cache keyed by everything that defines them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

TRAINERS = ("auto", "direct", "ray-train")


@dataclass(frozen=True)
class TrialSetup:
    """Per-family, per-run trial settings.

    Attributes:
        family: registered family name.
        kind: the family's kind (``torch`` or ``classic``).
        manifest: absolute path of the manifest.
        splits: absolute path of the run's ``splits.json``.
        size: network input side.
        windows: HU windows ``[[level, width], ...]``.
        seed: data/augmentation seed.
        augment: :class:`~dvt_search.data.augment.Augment` fields for the training set (``{}`` = none).
        budget: epochs of a full trial (``max_epochs``; 1 for one-shot classic families).
        spec: the :class:`~dvt_search.families.base.DataSpec` as a dict (computed once by the driver).
        cache_dir: shared cache directory (SIFT descriptors).
        use_cache: whether classic families may use ``cache_dir``.
        trainer: ``direct`` (engine inside the Tune trial) or ``ray-train`` (TorchTrainer DDP).
        workers: Ray Train workers per trial (``ray-train`` only).
        cpus: CPUs per trial (direct) or per Train worker (``ray-train``).
        gpus: GPUs per trial (direct; fractional allowed) or per Train worker.
        loader_workers: DataLoader worker processes per training process.
        train_storage: where trials keep their checkpoints (``<run>/train/<family>``: one directory per
            trial; for ``ray-train`` trials the Train run of that name).
        keep_checkpoints: best checkpoints a trial keeps besides its latest (by ``val_auc``).
        plugins: modules imported in every trial before the family lookup (extra families).
        run_dir: the run directory (trials read their own record there).
    """

    family: str
    kind: str
    manifest: str
    splits: str
    size: int
    windows: list[list[float]]
    seed: int
    budget: int
    spec: dict[str, Any]
    augment: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = ""
    use_cache: bool = True
    trainer: str = "direct"
    workers: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    loader_workers: int = 0
    train_storage: str = ""
    keep_checkpoints: int = 2
    plugins: list[str] = field(default_factory=list)
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialSetup:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def data_key(self) -> tuple[Any, ...]:
        """Everything that defines the datasets (the per-process cache key)."""
        aug = tuple(sorted((k, repr(v)) for k, v in self.augment.items()))
        return (self.manifest, self.splits, self.size, tuple(map(tuple, self.windows)), aug, self.seed)


def import_plugins(modules: list[str]) -> None:
    """Import plug-in modules (each registers its families on import)."""
    for name in modules:
        importlib.import_module(name)


_DATA: dict[tuple[Any, ...], dict[str, Any]] = {}


def datasets(setup: TrialSetup) -> dict[str, Any]:
    """The ``train``/``val``/``test`` datasets of ``setup``, opened once per process."""
    key = setup.data_key
    if key not in _DATA:
        from dvt_search.data.augment import Augment
        from dvt_search.data.dataset import build_datasets

        augment = Augment(**setup.augment) if setup.augment else None
        _DATA.clear()  # one run per process: drop datasets of an earlier family/run
        _DATA[key] = build_datasets(
            setup.manifest,
            setup.splits,
            size=setup.size,
            windows=setup.windows,
            augment=augment,
            seed=setup.seed,
        )
    return _DATA[key]
