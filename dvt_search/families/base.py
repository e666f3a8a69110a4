"""The contract every model family implements (no Ray here).

A *family* is a class registered in :mod:`dvt_search.families` with a unique ``name``. ``build(params,
spec)`` turns one configuration (a flat ``dict`` of search-space values, merged over
``default_params()``) into a :class:`Model`, which trains epoch by epoch and reports through a callback so
that a scheduler (ASHA in the runtime) can stop it between epochs.

Metric names reported in :class:`EpochReport.metrics` (all floats):

* ``val_auc`` — slice-level ROC AUC on the validation set: the search objective for every family.
* ``val_loss``, ``train_loss`` — where the family has a loss (torch families).
* family-specific extras, e.g. ``train_loss_cls`` / ``train_loss_pix`` / ``train_loss_dice`` (multitask,
  paper Fig. 3), ``val_patch_auc`` (patch model), ``val_dice``.

Hooks with defaults (override where a family differs; callers never switch on ``Family.kind``):
``Family.trial_needs`` / ``fit_options`` (the runtime and ``dvt-search train``), ``Family.model_spec``
(the model's own input size and slice context), ``Family.count_parameters``
and ``Model.n_params`` (selection tie-breaks), ``Model.export`` / ``training_only_files`` /
``preprocess_notes`` (``dvt-search export``), ``Family.open_export`` (``dvt-search predict``: an
:class:`ExportedScorer` with ``scores``, ``heatmaps`` and ``vein_fractions``). The
defaults describe a one-shot CPU model without a network graph, scored by its own ``predict``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from dvt_search.data.spec import DataSpec
from dvt_search.engine.errors import FitError as FitError  # re-exported: part of the family contract

META_FILE = "meta.json"


@dataclass
class FitData:
    """Training inputs handed to :meth:`Model.fit`.

    ``train``/``val`` are :class:`dvt_search.data.dataset.SliceDataset` instances (or any torch Dataset
    yielding the same dicts). ``cache_dir`` is where a family may keep derived, reusable artefacts (the
    SIFT descriptor cache); entries must be keyed by ``dataset.cache_key`` so different data never mix.
    """

    train: Any
    val: Any
    cache_dir: Path | None = None
    num_workers: int = 0
    #: hold the compact training (then validation) slices in memory when they fit this many GiB (0: off;
    #: :mod:`dvt_search.data.resident`); ``resident_on``: ``host`` (pinned on a GPU trial) or ``device``
    resident_budget_gb: float = 0.0
    resident_on: str = "host"


@dataclass
class EpochReport:
    """Metrics of one finished epoch (``epoch`` counts from 1)."""

    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)


#: Called after every epoch with the report and the model (so the caller can checkpoint it).
#: Returning ``True`` stops training after this epoch.
EpochCallback = Callable[[EpochReport, "Model"], "bool | None"]


class Model(ABC):
    """One built configuration of a family."""

    family: ClassVar[str]

    def __init__(self, params: Mapping[str, Any], spec: DataSpec) -> None:
        self.params = dict(params)
        self.spec = spec
        self.epochs_done = 0
        self.history: list[EpochReport] = []

    @abstractmethod
    def fit(
        self,
        data: FitData,
        epochs: int,
        callback: EpochCallback | None = None,
        **kwargs: Any,
    ) -> list[EpochReport]:
        """Train until ``epochs`` epochs are done in total (resuming from ``epochs_done``).

        Calls ``callback`` after each epoch; stops early when it returns ``True``.
        """

    @abstractmethod
    def predict(self, dataset: Any) -> np.ndarray:
        """Per-slice DVT probabilities in [0, 1], in dataset order (``float64[len(dataset)]``)."""

    @abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write a self-describing checkpoint directory (``meta.json`` + weights, no pickles)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Model:
        """Load a checkpoint written by :meth:`save` (safe: no untrusted pickle is executed)."""

    # ----------------------------------------------------------------- hooks with defaults
    #: Checkpoint files needed only to resume training (left out of an export).
    training_only_files: ClassVar[frozenset[str]] = frozenset()

    def n_params(self) -> int | None:
        """Parameters of the model's network (trainable + frozen); ``None`` when it has none to count."""
        return None

    def export(self, directory: Path) -> dict[str, Any]:
        """Write deployable artefacts beyond the checkpoint files into ``directory`` (an export folder).

        The export folder already holds a copy of the checkpoint (less :attr:`training_only_files`), so it
        loads with the family's ``load``. Returns what ``export.json`` records about the artefacts: at
        least ``torchscript`` (a dict, or ``None`` without one) and ``onnx`` (``{"ok": bool, ...}`` with an
        ``error`` when not ok). The default writes nothing: a model without a network graph.
        """
        return {
            "torchscript": None,
            "onnx": {"ok": False, "error": f"{self.family} is not a neural network (no ONNX graph)"},
        }

    def preprocess_notes(self) -> dict[str, Any]:
        """Family-specific entries of ``preprocess.json`` (e.g. the SIFT baseline's uint8 input)."""
        return {}

    # ----------------------------------------------------------------- metadata
    def meta(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "params": self.params,
            "spec": self.spec.to_dict(),
            "epochs_done": self.epochs_done,
            "history": [{"epoch": r.epoch, **r.metrics} for r in self.history],
        }

    def write_meta(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / META_FILE).write_text(json.dumps(self.meta(), indent=2, default=float))


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a dvt-search checkpoint (no {META_FILE})")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class TrialNeeds:
    """What one trial of a family asks of the runtime (plain data: the runtime turns it into Ray resources).

    Attributes:
        budget: epochs of a full-budget trial (1 for one-shot families: nothing to stop early).
        trainer: ``direct`` (the family trains inside the trial's own process) or ``ray-train``
            (a Ray Train ``TorchTrainer`` with ``workers`` DDP workers).
        workers: training processes of one trial (``ray-train`` only; 1 otherwise).
        cpus: CPUs of each training process.
        gpus: GPUs of each training process (fractions pack trials onto one device).
        reuse_actors: whether consecutive trials of the family may run in one process, one after another
            (no new process, imports and dataset opening per trial; the GPU or CPUs stay with the family
            between them). Safe for ``direct`` trials: a trial the scheduler stops is blocked in its
            report, so its thread ends at once. Not for ``ray-train`` trials (a stopped trial's Train run
            would be cut inside the process the next trial gets).
    """

    budget: int
    trainer: str = "direct"
    workers: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    reuse_actors: bool = True

    @property
    def total_cpus(self) -> float:
        """CPUs one trial holds in total (all its workers together)."""
        return self.cpus * self.workers

    @property
    def total_gpus(self) -> float:
        """GPUs one trial holds in total (all its workers together)."""
        return self.gpus * self.workers


class ExportedScorer(Protocol):
    """An export folder opened for inference (:meth:`Family.open_export`)."""

    #: how :meth:`heatmaps` are made, in words (recorded in a prediction's summary)
    heatmap_method: str

    def scores(self, volume_hu: np.ndarray, *, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
        """Per-slice DVT probabilities ``float64[Z]`` of a ``[Z, H, W]`` HU volume."""
        ...

    def heatmaps(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        """Maps ``[N, S, S]`` in [0, 1] explaining each slice's score, or ``None`` where the family has none.

        For a model with slice context (``spec.context_slices = k > 0``) each element is the slice's
        ``[2k+1, H, W]`` stack (:func:`dvt_search.families.deployed.context_stacks`); a 2-D slice stands
        for a one-slice volume. The same holds for :meth:`vein_fractions`.
        """
        ...

    def vein_fractions(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        """Per slice, the fraction ``float64[N]`` of its area where the model's vein detector sees vein.

        ``None`` where the family has no vein detector (the default of every scorer but the
        segmentation and patch-grid networks'). The deployed scope check (:mod:`dvt_search.deploy.scope`)
        warns when it finds (almost) no vein on most slices.
        """
        ...


class Family(ABC):
    """A registered model family. Subclasses set ``name`` and implement ``default_params``/``build``/``load``.

    What differs between families is asked of the family itself through the hooks below (trial needs,
    fit options, parameter count, export), never decided by callers from a type code such as ``kind``
    (a label for people only).
    """

    name: ClassVar[str]
    #: A short human-readable label of how the family learns (shown by ``dvt-search families``).
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Whether the family trains epoch by epoch (an epoch budget the scheduler can stop early, checkpoints
    #: every epoch) rather than in one shot.
    trains_by_epoch: ClassVar[bool] = False
    #: Checkpoint files of this family's models needed only to resume training (``Model.training_only_files``;
    #: left out of the run records' checkpoint copies and of exports).
    training_only_files: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``default_params()`` is a published configuration (the paper's): the searcher enqueues it as
    #: the study's first trial ("paper trial"). ``False`` for a family the paper does not have.
    paper_configuration: ClassVar[bool] = True

    # ----------------------------------------------------------------- what a trial needs
    @classmethod
    def trial_needs(
        cls, *, max_epochs: int, cpus: float, gpus: float, train_workers: int, trainer: str
    ) -> TrialNeeds:
        """The runtime's settings for one trial, given the run's resource options.

        The default runs one CPU process per trial, re-used by the family's next trial: one "epoch" for a
        one-shot family (the SIFT baseline), the run's epoch budget when ``trains_by_epoch``.
        Accelerator-capable families (:class:`~dvt_search.families.torch_family.TorchFamily`) override it.

        Args:
            max_epochs: the run's epoch budget of a full trial.
            cpus: ``--cpus-per-trial`` (per worker).
            gpus: ``--gpus-per-trial`` (per worker).
            train_workers: ``--train-workers``.
            trainer: the run's resolved trainer (``direct`` or ``ray-train``).
        """
        by_epoch = cls.trains_by_epoch
        return TrialNeeds(
            budget=int(max_epochs) if by_epoch else 1,
            trainer="direct",
            workers=1,
            cpus=float(cpus),
            gpus=0.0,
            reuse_actors=True,
        )

    #: Whether the family fills a cache shared by its trials before its search (see :meth:`warm_cache`).
    warms_shared_cache: ClassVar[bool] = False

    @classmethod
    def warm_cache(
        cls,
        params: Mapping[str, Any],
        data: Mapping[str, Any],
        cache_dir: Path,
        n_jobs: int,
        searched: list[str],
    ) -> dict[str, int]:
        """Fill the shared cache once, before the family's trials start (only when ``warms_shared_cache``).

        Args:
            params: the family's resolved default/fixed parameters of the searched space.
            data: the run's ``train``/``val``/``test`` datasets.
            cache_dir: the run's shared cache directory.
            n_jobs: worker threads to use.
            searched: names of the parameters the space searches.

        Returns:
            items cached per partition (for the progress line).
        """
        return {}

    @classmethod
    def fit_options(cls, *, device: str, cpus: float, use_cache: bool) -> dict[str, Any]:
        """Keyword arguments for :meth:`Model.fit` inside a trial (device, threads, caches).

        Args:
            device: ``cuda`` when the trial holds a GPU, else ``cpu``.
            cpus: CPUs the training process holds.
            use_cache: whether derived artefacts may be read from / written to ``FitData.cache_dir``.
        """
        return {}

    @classmethod
    def count_parameters(cls, directory: str | Path) -> int | None:
        """Parameters of a checkpoint's model (:meth:`Model.n_params`; the default loads the checkpoint)."""
        return cls.load(directory).n_params()

    @classmethod
    def open_export(cls, directory: str | Path, spec: DataSpec) -> ExportedScorer:
        """An export folder (see :mod:`dvt_search.deploy.export`) opened for scoring new HU slices.

        The default loads the family's checkpoint copy in the folder and scores with
        :meth:`Model.predict` on the slices preprocessed by :mod:`dvt_search.data.transform` (no heat
        maps); families with a compiled artefact (TorchScript) override it.

        Args:
            directory: the export folder.
            spec: input size and HU windows, as ``preprocess.json`` records them.
        """
        from .deployed import CheckpointScorer

        return CheckpointScorer(cls.load(directory), spec)

    @classmethod
    def model_spec(cls, params: Mapping[str, Any], spec: DataSpec) -> DataSpec:
        """The input a model of ``params`` sees, given the run's ``spec`` (what ``build`` hands the model).

        The default is the run's spec; the whole-slice CNN families choose their own ``input_size`` and
        ``context_slices`` (:meth:`TorchFamily.model_spec
        <dvt_search.families.torch_family.TorchFamily.model_spec>`). The runtime asks it before a trial to
        recompute ``vein_fraction`` at the model's size.
        """
        return spec

    @classmethod
    def search_space_file(cls) -> str:
        """Name of the family's search-space file under ``search_spaces/``."""
        return f"{cls.name}.yaml"

    @classmethod
    @abstractmethod
    def default_params(cls) -> dict[str, Any]:
        """Every knob with its default (the paper's setting where it gives one)."""

    @classmethod
    @abstractmethod
    def build(cls, params: Mapping[str, Any], spec: DataSpec) -> Model:
        """A fresh model for ``default_params()`` updated by ``params`` (unknown keys raise ``KeyError``)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Model:
        """Load a checkpoint of this family."""

    @classmethod
    def resolve_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``default_params()`` updated by ``params``; raises ``KeyError`` naming unknown keys."""
        defaults = cls.default_params()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise KeyError(f"family {cls.name!r} has no parameter(s) {unknown}; known: {sorted(defaults)}")
        return {**defaults, **dict(params)}
