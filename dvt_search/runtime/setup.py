"""What every trial of a family needs besides its hyperparameters, derived from the run (plain data, no Ray).

Nothing is copied into the trials: Tune's config of each trial carries only ``{"run_dir", "family"}``
(plus the run's metric and storage-marker token, :mod:`.storage`)
(:meth:`TrialContext.ref`), and every process that runs a trial — a Tune trial actor, a Ray Train worker,
the SIFT pre-warm task — rebuilds the same :class:`TrialContext` from the run's ``run.json`` on the shared
storage: the frozen :class:`~dvt_search.rundir.config.RunConfig`, the training partition's data spec, and
the family's own answer to what one of its trials needs (:meth:`~dvt_search.families.base.Family.trial_needs`).
So Tune's experiment snapshot stays small and a resumed driver rebuilds identical trials.

Datasets are never shipped: each process opens them from the shared filesystem (volume ``.npy`` files are
memory-mapped, so trials on one node share the page cache) and keeps them in a per-process cache keyed by
everything that defines them.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvt_search import families
from dvt_search.data.spec import DataSpec
from dvt_search.families.base import Family, TrialNeeds
from dvt_search.rundir import RunConfig, RunDir

#: CPUs a ``ray-train`` trial's own process reserves (the Tune function that waits on its TorchTrainer; the
#: Train V2 controller is pinned to its node with ``num_cpus=0``). A CPU share, never ``{"memory": 1}``: a
#: head that advertises ``CPU: 0`` can then never hold it. It is taken out of each Train worker's CPUs, so the
#: driver fits beside any one worker on a node of exactly ``cpus`` CPUs (see :func:`train_worker_cpus`).
DRIVER_CPU = 0.01


def train_worker_cpus(needs: TrialNeeds) -> float:
    """CPUs each Train worker of a ``ray-train`` trial reserves: ``cpus`` less the driver's share (1e-4 steps).

    The driver lands on one node beside (at most) one worker, so the whole share comes out of *every*
    worker: driver + worker then fit a node of ``cpus`` CPUs. Taking ``DRIVER_CPU / workers`` from each
    instead (a trial of exactly ``workers x cpus``) left that node 0.005 CPU short: on a ``CPU: 0`` head
    with two ``cpus``-CPU worker nodes, a 2-worker trial's placement group never became ready. A trial
    reserves ``workers x cpus - (workers - 1) x DRIVER_CPU`` CPUs. When ``cpus`` is no more than the driver's
    share, the driver reserves memory instead (:func:`~.tuning.trial_resources`) and workers get all of it.
    """
    if needs.cpus <= DRIVER_CPU:
        return float(needs.cpus)
    return max(0.0, math.floor((needs.cpus - DRIVER_CPU) * 1e4 + 1e-9) / 1e4)


def import_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import plug-in modules (each registers its families on import)."""
    for name in modules:
        importlib.import_module(name)


def trial_needs(family: type[Family], config: RunConfig) -> TrialNeeds:
    """The family's answer for this run's budget (its own epochs: ``budget.epochs_for``) and resources."""
    res = config.resources
    return family.trial_needs(
        max_epochs=config.budget.epochs_for(family.name),
        cpus=res.cpus_per_trial,
        gpus=res.gpus_per_trial,
        train_workers=res.train_workers,
        trainer=res.trainer,
    )


@dataclass(frozen=True)
class TrialContext:
    """One family's trial settings in one run (derived; see the module docstring).

    Attributes:
        run: the run directory.
        family: registered family name.
        config: the run's frozen configuration.
        spec: the training partition's :class:`DataSpec` (``None`` before the driver computed it).
        needs: what one trial of the family needs (budget, trainer, workers, resources, actor reuse).
    """

    run: RunDir
    family: str
    config: RunConfig
    spec: DataSpec | None
    needs: TrialNeeds

    @classmethod
    def derive(
        cls, run: RunDir, family: str, config: RunConfig, spec: Mapping[str, Any] | None
    ) -> TrialContext:
        """The context of ``family`` in a run with ``config`` (plugins must be imported already)."""
        fam = families.get(family)
        return cls(run, family, config, DataSpec.from_dict(spec) if spec else None, trial_needs(fam, config))

    @classmethod
    def load(cls, ref: Mapping[str, Any]) -> TrialContext:
        """Rebuild the context in a trial process from :meth:`ref` (reads ``run.json``, imports plugins)."""
        run = RunDir(ref["run_dir"])
        info = run.read_info()
        import_plugins(info.config.plugins)
        return cls.derive(run, str(ref["family"]), info.config, info.state.spec)

    def ref(self) -> dict[str, str]:
        """What travels in each trial's Tune config (``config["run"]``); called by the driver.

        Besides the run directory and the family: the run's metric and the token of the run's storage
        marker as the driver reads it, which every trial process checks first (:mod:`.storage`).
        """
        ref = {"run_dir": str(self.run.path), "family": self.family, "metric": self.config.metric}
        marker = self.run.read_storage_marker()
        if marker:
            ref["marker"] = marker
        return ref

    # --- paths and settings the trial uses ----------------------------------------------------------------------
    @property
    def budget(self) -> int:
        return self.needs.budget

    @property
    def ray_train(self) -> bool:
        """Whether trials run a Ray Train ``TorchTrainer`` (DDP workers) rather than train in place."""
        return self.needs.trainer == "ray-train"

    @property
    def train_storage(self) -> Path:
        """Where trials keep their checkpoints: one store per trial (for ``ray-train``: the Train run)."""
        return self.run.train_dir(self.family)

    @property
    def cache_dir(self) -> Path:
        return self.run.cache_dir

    def fit_options(self, device: str) -> dict[str, Any]:
        """The family's ``Model.fit`` keyword arguments inside a trial."""
        return families.get(self.family).fit_options(
            device=device, cpus=self.needs.cpus, use_cache=self.config.sift_cache
        )

    @property
    def data_key(self) -> tuple[Any, ...]:
        """Everything that defines the datasets (the per-process cache key)."""
        d = self.config.data
        aug = tuple(sorted((k, repr(v)) for k, v in d.augment.items()))
        return (d.manifest, str(self.run.splits_file), d.input, aug, self.config.seed)


_DATA: dict[tuple[Any, ...], dict[str, Any]] = {}
_VEIN: dict[tuple[Any, ...], DataSpec] = {}


def datasets(ctx: TrialContext) -> dict[str, Any]:
    """The ``train``/``val``/``test`` datasets of the run, opened once per process."""
    key = ctx.data_key
    if key not in _DATA:
        from dvt_search.data.augment import Augment
        from dvt_search.data.dataset import build_datasets

        d = ctx.config.data
        augment = Augment(**d.augment) if d.augment else None
        _DATA.clear()  # one run per process: drop datasets of an earlier family/run
        _DATA[key] = build_datasets(
            d.manifest,
            ctx.run.splits_file,
            size=d.input.image_size,
            windows=d.input.windows,
            augment=augment,
            seed=ctx.config.seed,
        )
    return _DATA[key]


def model_spec(ctx: TrialContext, params: Mapping[str, Any]) -> DataSpec:
    """The data spec a trial's model is built with: the run's, at the input its family's params choose.

    A family with its own input size (:meth:`~dvt_search.families.base.Family.model_spec`) gets the
    training vein fraction re-measured at that size (once per process and size).
    """
    if ctx.spec is None:
        raise RuntimeError(f"{ctx.run.run_file}: no data spec recorded; the driver computes it before trials")
    spec = families.get(ctx.family).model_spec(params, ctx.spec)
    if spec.image_size == ctx.spec.image_size:
        return spec
    key = (ctx.data_key, spec.image_size)
    if key not in _VEIN:
        from dvt_search.data.dataset import spec_at_input

        _VEIN.clear()
        _VEIN[key] = spec_at_input(
            ctx.spec.with_input(image_size=spec.image_size), datasets(ctx)["train"], seed=ctx.config.seed
        )
    return dataclasses.replace(spec, vein_fraction=_VEIN[key].vein_fraction)
