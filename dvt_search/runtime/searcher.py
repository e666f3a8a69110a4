"""A Ray Tune searcher backed by a real, persistent Optuna study (ask/tell), made for ASHA.

Why not Ray's stock ``OptunaSearch``: it runs Optuna with a no-op pruner and, when ASHA stops a trial
after a few epochs, tells Optuna that trial's last (low-fidelity) value as COMPLETE. TPE then compares a
2-epoch AUC with a 30-epoch AUC as if they were the same kind of number. This searcher instead keeps the
fidelities apart:

* every epoch's metric is stored as an Optuna *intermediate value* (``trial.report(value, epoch)``);
* a trial that ends before its budget (stopped by the scheduler) is told **PRUNED**; TPE ranks pruned
  trials by how far they got and then by their value at that step, below every completed trial;
* a trial that ran its full budget (``max_epochs``; 1 for the one-shot SIFT baseline) is told
  **COMPLETE** with its *best* epoch value (the checkpoint that selection will use);
* a trial that reported a not-retried failure (:mod:`.failures`: no storage, out of GPU memory) is told
  **FAIL** at once, even after epochs with values;
* a trial that raised is told **FAIL** only once the family's search is over (see
  :func:`close_unfinished`): with ``resume_errored`` a resumed run re-runs errored trials, and a FAIL in
  Optuna cannot be undone.

The study (``study_name`` = family) lives in an Optuna ``JournalStorage`` file (``<run>/optuna.journal``)
so ``optuna-dashboard <run>/optuna.journal`` shows the search live, and a resumed driver continues the
*same* study. Sampler: ``TPESampler(multivariate=True, seed=seed)`` (``group=True`` when the space has
conditional params; the constant liar keeps concurrent suggestions apart), or ``RandomSampler`` for
baselines. The sampler seed is derived from the run seed *and the family name* (:func:`family_seed`), so
two families with the same params (VGG-16 and DenseNet-161 both search lr, weight decay, batch size...)
do not draw the same configurations in the same order.

Paper trial: with ``paper_trial`` (the default), the family's paper configuration (its
``default_params()``, :func:`dvt_search.search.space.paper_point`) is enqueued as the study's FIRST trial
(``study.enqueue_trial``) with the user attribute ``paper_config = True``; its Tune config carries
``paper_config: true`` and ``paper_outside_space`` (the searched params whose paper value the space cannot
represent: the trial runs the paper value, Optuna's trial does not hold it). It is enqueued only into an
empty study, so a resumed run never enqueues it twice (and a study started without it never gets one).
A family without a paper configuration (``Family.paper_configuration`` false: the vein cascade) gets none.

Resume: Tune's experiment snapshot (which holds this searcher's state) can lag the journal. Optuna trials
asked after the snapshot are unknown to the restored Tune run; RUNNING ones are *re-used* (same params) by
the next suggestions, and the searcher stops suggesting once the study holds ``num_samples`` trials, so a
resumed family ends with exactly ``num_samples`` trials in the study and in the run directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter, Searcher

from dvt_search import families
from dvt_search.rundir.journal import repair_journal
from dvt_search.search.space import SearchSpace, paper_point, suggest, suggest_paper

from .failures import fatal_error

log = logging.getLogger(__name__)

#: User attribute on each Optuna trial naming the Tune trial that ran it.
TUNE_ID_ATTR = "tune_trial_id"
#: User attribute marking the trial that runs the family's paper configuration.
PAPER_ATTR = "paper_config"
SAMPLERS = ("tpe", "random")


def open_study(journal: str | Path, family: str, *, mode: str = "max", sampler: Any = None) -> optuna.Study:
    """Create or load the family's study in an Optuna journal file (a torn last record is repaired first)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(journal).parent.mkdir(parents=True, exist_ok=True)
    repair_journal(journal)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(
        study_name=family,
        storage=storage,
        sampler=sampler,
        direction="maximize" if mode == "max" else "minimize",
        load_if_exists=True,
    )


def make_sampler(
    kind: str, seed: int, space: SearchSpace, startup_trials: int = 10
) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, seeded; grouped when the space is conditional) or ``random``.

    TPE samples at random for its first ``startup_trials`` trials (Optuna's default: 10).
    """
    if kind == "tpe":
        return optuna.samplers.TPESampler(
            multivariate=True, group=space.conditional, seed=seed, n_startup_trials=startup_trials
        )
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}; expected one of {SAMPLERS}")


def family_seed(seed: int, family: str) -> int:
    """The sampler seed of ``family`` in a run with ``seed``: deterministic, different per family.

    The first 4 bytes (big-endian) of ``sha256(f"{seed}:{family}")``: stable across processes and Python
    versions (unlike ``hash()``), in ``[0, 2**32)`` as NumPy seeds must be.
    """
    digest = hashlib.sha256(f"{int(seed)}:{family}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def close_unfinished(journal: str | Path, family: str) -> int:
    """Tell FAIL for every trial of the study still RUNNING (call when the family's search is over).

    Returns:
        how many trials were closed.
    """
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    repair_journal(journal)
    study = optuna.load_study(study_name=family, storage=JournalStorage(JournalFileBackend(str(journal))))
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    return n


class OptunaStudySearcher(Searcher):
    """Tune searcher over an Optuna study via ask/tell (see the module docstring for the semantics).

    Args:
        space: the family's validated search space (suggested define-by-run).
        journal: path of the Optuna journal file.
        num_samples: trials the family's search runs in total.
        budget: epochs of a full-budget trial (a trial ending earlier is PRUNED).
        metric: the reported metric to optimise.
        mode: ``max`` or ``min``.
        seed: the run seed (the sampler is seeded with :func:`family_seed` of it and the family).
        sampler: ``tpe`` or ``random``.
        startup_trials: random trials before TPE models the results.
        paper_trial: enqueue the family's paper configuration as the first trial of an empty study.
    """

    def __init__(
        self,
        space: SearchSpace,
        journal: str | Path,
        *,
        num_samples: int,
        budget: int,
        metric: str = "val_auc",
        mode: str = "max",
        seed: int = 0,
        sampler: str = "tpe",
        startup_trials: int = 10,
        paper_trial: bool = True,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        self.space = space
        self.journal = str(journal)
        self.num_samples = int(num_samples)
        self.budget = int(budget)
        self.seed = int(seed)
        self.sampler_kind = sampler
        self.startup_trials = int(startup_trials)
        self.paper_trial = bool(paper_trial)
        self._owned: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self._study: optuna.Study | None = None

    # --- pickling (Tuner.restore unpickles the searcher; the study is reopened from the journal) ------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_study"] = None
        return state

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            seed = family_seed(self.seed, self.space.family)
            sampler = make_sampler(self.sampler_kind, seed, self.space, self.startup_trials)
            self._study = open_study(self.journal, self.space.family, mode=self.mode, sampler=sampler)
            self._study.set_user_attr("metric", self.metric)
            self._study.set_user_attr("budget_epochs", self.budget)
            self._study.set_user_attr("sampler_seed", seed)
            has_paper = families.get(self.space.family).paper_configuration
            if self.paper_trial and has_paper and not self._study.get_trials(deepcopy=False):
                point = paper_point(self.space)
                self._study.enqueue_trial(
                    dict(point.in_space),
                    user_attrs={PAPER_ATTR: True, "paper_outside_space": sorted(point.outside)},
                )
                if point.outside:
                    log.info(
                        "%s: paper configuration enqueued; outside the searched space (run as the paper's "
                        "value, not told to Optuna): %s",
                        self.space.family,
                        dict(point.outside),
                    )
        return self._study

    # --- Tune Searcher API ------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        if metric and metric != self.metric:
            raise ValueError(f"searcher optimises {self.metric!r}, Tune asked for {metric!r}")
        if mode and mode != self.mode:
            raise ValueError(f"searcher mode is {self.mode!r}, Tune asked for {mode!r}")
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        study = self.study
        trials = study.get_trials(deepcopy=False)
        owned = set(self._owned.values())
        orphans = [t for t in trials if t.state == TrialState.RUNNING and t.number not in owned]
        if orphans:
            frozen = orphans[0]
            trial = optuna.Trial(study, frozen._trial_id)
            log.info(
                "trial %s re-uses Optuna trial %d left running by an interrupted driver",
                trial_id,
                frozen.number,
            )
        elif sum(t.state != TrialState.WAITING for t in trials) >= self.num_samples:
            # an enqueued (WAITING) trial is not one of the samples yet: ask() below starts it
            return Searcher.FINISHED
        else:
            trial = study.ask()
        out: dict[str, Any] = {}
        if trial.user_attrs.get(PAPER_ATTR):
            point = paper_point(self.space)
            params = suggest_paper(trial, self.space, point)
            out = {"paper_config": True, "paper_outside_space": sorted(point.outside)}
        else:
            params = suggest(trial, self.space)
        trial.set_user_attr(TUNE_ID_ATTR, trial_id)
        self._owned[trial_id] = trial.number
        return {"params": params, "optuna_number": trial.number, **out}

    def _frozen(self, trial_id: str) -> optuna.trial.FrozenTrial | None:
        number = self._owned.get(trial_id)
        if number is None:
            return None
        return self.study.get_trials(deepcopy=False)[number]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict | None) -> optuna.trial.FrozenTrial | None:
        """Store the result's epoch value as an intermediate value; returns the (fresh) frozen trial."""
        frozen = self._frozen(trial_id)
        if frozen is None or frozen.state.is_finished() or not result:
            return frozen
        value, epoch = result.get(self.metric), result.get("epoch", result.get("training_iteration"))
        if value is None or epoch is None or not math.isfinite(float(value)):
            return frozen
        if int(epoch) not in frozen.intermediate_values:
            optuna.Trial(self.study, frozen._trial_id).report(float(value), int(epoch))
            frozen = self.study.get_trials(deepcopy=False)[frozen.number]
        return frozen

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        frozen = self._report(trial_id, result)
        if frozen is None or frozen.state.is_finished():
            return  # unknown trial, or already told before an interrupted driver was resumed
        if error:
            return  # told FAIL by close_unfinished() once the family is over (a resume may re-run it)
        values = frozen.intermediate_values
        if not values or fatal_error(result):  # a not-retried failure (.failures) is FAIL, never PRUNED
            self.study.tell(frozen.number, state=TrialState.FAIL)
            return
        epochs = max(values)
        if epochs >= self.budget:
            best = max(values.values()) if self.mode == "max" else min(values.values())
            self.study.tell(frozen.number, best)
        else:
            self.study.tell(frozen.number, state=TrialState.PRUNED)

    # --- state (Tune's experiment snapshot) ---------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"owned": dict(self._owned), "num_samples": self.num_samples, "budget": self.budget}

    def set_state(self, state: dict[str, Any]) -> None:
        self._owned = {str(k): int(v) for k, v in state["owned"].items()}
        self.num_samples = int(state["num_samples"])
        self.budget = int(state["budget"])

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


class ResumableLimiter(ConcurrencyLimiter):
    """Ray's ``ConcurrencyLimiter`` whose saved state also holds its live trials.

    Ray's limiter saves only the searcher it wraps, and passes a trial's completion on only for trials it
    knows as live. A resumed experiment restores the limiter as pickled at the first start (no live trials),
    so a trial that was running when the driver stopped, re-run and ended after ``--resume``, was never told
    to Optuna (left RUNNING, later FAIL). This limiter restores them as live.
    """

    def get_state(self) -> dict[str, Any]:
        return {"searcher": self.searcher.get_state(), "live": sorted(self.live_trials)}

    def set_state(self, state: dict[str, Any]) -> None:
        if "searcher" not in state:  # saved by Ray's limiter (an experiment started before): the searcher's
            self.searcher.set_state(state)
            return
        self.searcher.set_state(state["searcher"])
        self.live_trials = set(state["live"])
        self.num_unfinished_live_trials = len(self.live_trials)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))
