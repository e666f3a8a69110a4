"""Driver-side Tune callbacks: the run-directory records and the live progress lines.

:class:`RecordsCallback` writes through :class:`dvt_search.rundir.layout.RunDir` (the contract the
selector reads, with no Ray): ``trial.json`` on start / each result / completion / error, one
``metrics.jsonl`` line per epoch, and at the trial's end a copy of its best checkpoint in
``trials/<family>/<trial_id>/checkpoint/``. Every result carries the path of the epoch's checkpoint as
``checkpoint_path``: the trial's own store for ``direct`` trials, the Train run's checkpoint for
``ray-train`` trials (``TuneReportCallback``). The callback's state (best checkpoint per trial,
accumulated wall time) is part of Tune's experiment snapshot, so a resumed driver continues it; a trial
whose record is already final when Tune restarts it (a snapshot older than the records) is left as it is.
A trial that ended with a not-retried failure (its last result holds ``storage_error`` or ``oom_error``:
a node without the run directory, or out of GPU memory; :mod:`.failures`) is recorded ``failed`` with
that message.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from dvt_search import families
from dvt_search.fsutil import atomic_directory
from dvt_search.rundir import FINAL, RunDir, TrialRecord

from .failures import FATAL_KEYS, fatal_error

log = logging.getLogger(__name__)

#: Result key holding the path of the epoch's checkpoint (the key ``TuneReportCallback`` uses too).
CHECKPOINT_KEY = "checkpoint_path"

#: Key of the per-trial callback state holding a not-retried failure's message (:mod:`.failures`).
FATAL = "fatal_error"

#: Keys Tune (or TuneReportCallback) adds to a result that are not the family's metrics.
_NOT_METRICS = set(AUTO_RESULT_KEYS) | {
    "done",
    "trial_id",
    "experiment_tag",
    "should_checkpoint",
    "checkpoint_path",
    "train_placement_group",
    *FATAL_KEYS,
    "iterations_since_restore",
    "time_since_restore",
}


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The family's metrics (plus ``epoch``) from a Tune result."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def copy_checkpoint(src: str | Path, dst: Path, skip: frozenset[str] = frozenset()) -> None:
    """Copy a checkpoint directory to ``dst`` atomically (hard links when on the same filesystem).

    Top-level files named in ``skip`` (the family's ``training_only_files``) are left out: the record's
    copy is for selection and export, never for resuming.
    """

    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)  # checkpoint files are immutable once written
        except OSError:
            shutil.copy2(s, d)

    with atomic_directory(dst) as tmp:
        shutil.copytree(
            Path(src),
            tmp,
            copy_function=link_or_copy,
            dirs_exist_ok=True,
            ignore=lambda d, names: [n for n in names if n in skip and Path(d) == Path(src)],
        )


class RecordsCallback(Callback):
    """Writes the run-directory records of one family's Tune experiment.

    Args:
        run_dir: the run directory.
        family: family name.
        budget: epochs of a full trial (fewer = ``stopped`` by the scheduler).
        metric: metric that ranks epochs (``val_auc``).
        mode: ``max`` or ``min``.
        cpus: CPUs reserved per trial (all workers together).
        gpus: GPUs reserved per trial (all workers together).
        gpu_plan: under ``--gpus-per-trial auto`` the family's :class:`~.packing.GpuPlan`: a trial's
            ``gpu_s`` books the share its config reserved (x ``workers``) instead of ``gpus``.
        workers: training processes per trial (``ray-train``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        family: str,
        *,
        budget: int,
        metric: str,
        mode: str,
        cpus: float,
        gpus: float,
        gpu_plan: Any = None,
        workers: int = 1,
    ) -> None:
        self.run = RunDir(run_dir)
        self.family = family
        self.budget = budget
        self.metric = metric
        self.mode = mode
        self.cpus = cpus
        self.gpus = gpus
        self.gpu_plan = gpu_plan
        self.workers = int(workers)
        self._state: dict[str, dict[str, Any]] = {}  # per trial: best score/epoch/checkpoint, wall time
        self._started: dict[str, float] = {}
        self._final_before: set[str] = set()  # restarted by a stale snapshot although already final
        self._first_step = True

    # --- state kept in Tune's experiment snapshot -----------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"trials": self._state}

    def set_state(self, state: dict[str, Any]) -> None:
        self._state = dict(state.get("trials", {}))

    # --- helpers ----------------------------------------------------------------------------------------------
    def _record(self, trial: Any) -> TrialRecord:
        rec = self.run.read_trial(self.family, trial.trial_id)
        if rec is not None:
            return rec
        cfg = trial.config
        return TrialRecord(
            trial_id=trial.trial_id,
            family=self.family,
            params=dict(cfg.get("params", {})),
            max_epochs=self.budget,
            optuna_number=cfg.get("optuna_number"),
            paper_config=bool(cfg.get("paper_config", False)),
            paper_outside_space=list(cfg.get("paper_outside_space", [])),
        )

    def _better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        # ties go to the later epoch: Tune/Train keep the later of equally scored checkpoints
        return value >= best if self.mode == "max" else value <= best

    def trial_gpus(self, params: dict[str, Any]) -> float:
        """GPUs a trial with ``params`` holds (all workers): its measured share under ``auto``."""
        if self.gpu_plan is None:
            return float(self.gpus)
        return float(self.gpu_plan.share(params)) * self.workers

    def _wall(self, trial_id: str) -> float:
        st = self._state.setdefault(trial_id, {})
        started = self._started.pop(trial_id, None)
        if started is not None:
            st["wall_s"] = st.get("wall_s", 0.0) + time.monotonic() - started
        return st.get("wall_s", 0.0)

    def _finish(self, trial: Any, status: str, error: str | None = None) -> None:
        rec = self._record(trial)
        st = self._state.setdefault(trial.trial_id, {})
        rec.wall_s = self._wall(trial.trial_id)
        rec.cpu_s = rec.wall_s * self.cpus
        rec.gpu_s = rec.wall_s * self.trial_gpus(rec.params)
        rec.status = status
        rec.error = error
        rec.ended_at = time.time()
        src = st.get("best_checkpoint")
        if src and Path(src).is_dir():
            skip = families.get(self.family).training_only_files
            copy_checkpoint(src, self.run.checkpoint_dir(self.family, trial.trial_id), skip)
            rec.has_checkpoint = True
        self.run.write_trial(rec)

    # --- Tune hooks -------------------------------------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._first_step:
            return
        self._first_step = False
        # A resumed run: records of trials the restored experiment never knew about (started after its last
        # snapshot and still unfinished) are dropped; their Optuna trials are re-used by new Tune trials.
        known = {t.trial_id for t in trials}
        for rec in self.run.trials(self.family):
            if rec.trial_id not in known and rec.status in ("pending", "running"):
                shutil.rmtree(self.run.trial_dir(self.family, rec.trial_id), ignore_errors=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self._record(trial)
        if rec.status in FINAL:
            self._final_before.add(trial.trial_id)
            return
        self._started[trial.trial_id] = time.monotonic()
        rec.status = "running"
        rec.error = None
        if rec.started_at is None:
            rec.started_at = time.time()
        self.run.write_trial(rec)

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if trial.trial_id in self._final_before:
            return
        self._started.setdefault(trial.trial_id, time.monotonic())
        fatal = fatal_error(result)  # no storage on the node, out of GPU memory: not retried (.failures)
        if fatal:
            self._state.setdefault(trial.trial_id, {})[FATAL] = fatal
            log.error("%s trial %s failed: %s", self.family, trial.trial_id, fatal)
            return
        metrics = epoch_metrics(result)
        epoch = int(metrics.get("epoch", result.get("training_iteration", 0)))
        metrics["epoch"] = epoch
        self.run.append_epoch(self.family, trial.trial_id, metrics)
        st = self._state.setdefault(trial.trial_id, {})
        rec = self._record(trial)
        rec.status = "running"
        rec.epochs = max(rec.epochs, epoch)
        rec.last = {k: v for k, v in metrics.items() if k != "epoch"}
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value) and self._better(value, st.get("best_score")):
            st.update(best_score=value, best_epoch=epoch)
            rec.best, rec.best_epoch = dict(rec.last), epoch
            if result.get(CHECKPOINT_KEY):
                st["best_checkpoint"] = str(result[CHECKPOINT_KEY])
        self.run.write_trial(rec)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._final_before:
            return
        rec = self._record(trial)
        rec.failures += 1
        rec.wall_s = self._wall(trial.trial_id)  # the failed attempt's time; the retry starts a new clock
        self.run.write_trial(rec)
        log.warning(
            "%s trial %s failed and will be retried from its last checkpoint", self.family, trial.trial_id
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._final_before:
            return
        rec = self._record(trial)
        blind = self._state.get(trial.trial_id, {}).get(FATAL)
        if blind:  # a clear failure, not retried: the user must fix the node's mount
            rec.failures += 1
            self.run.write_trial(rec)
            self._finish(trial, "failed", error=blind)
            return
        self._finish(trial, "completed" if rec.epochs >= self.budget else "stopped")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._final_before:
            return
        rec = self._record(trial)
        rec.failures += 1
        self.run.write_trial(rec)
        self._finish(trial, "failed", error=_error_text(trial))


def in_ray_actor() -> bool:
    """Whether this process runs the Tune experiment inside a Ray actor (not the search's driver)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else "trial failed (no error file)"


class ProgressCallback(Callback):
    """Prints a progress line for one family whenever a trial starts or ends (results: every ``every_s``).

    Silent when the experiment runs inside a Ray actor (families searched at once, :mod:`.concurrent`):
    the driver then prints one line over every family from the records.

    Example: ``[vgg16] 7/20 done | 2 running | 4 stopped early | 1 failed | best val_auc 0.7132 (a1b2c3d4)``.
    """

    def __init__(
        self, family: str, total: int, *, budget: int, metric: str, mode: str, every_s: float = 30.0
    ):
        self.family, self.total, self.budget = family, total, budget
        self.metric, self.mode, self.every_s = metric, mode, every_s
        self._running: set[str] = set()
        self._ended: dict[str, str] = {}  # trial id -> completed | stopped | failed
        self._best: tuple[float, str] | None = None
        self._last = 0.0
        self._printed = ""
        self._first_step = True

    def line(self) -> str:
        """The current progress line."""
        ended = list(self._ended.values())
        best = f"{self._best[0]:.4f} ({self._best[1]})" if self._best else "-"
        return (
            f"[{self.family}] {len(ended)}/{self.total} done | {len(self._running)} running | "
            f"{ended.count('stopped')} stopped early | {ended.count('failed')} failed | best {self.metric} {best}"
        )

    def _print(self) -> None:
        if in_ray_actor():  # the family runs beside others (.concurrent): the driver prints one line
            return
        line = self.line()
        if line != self._printed or time.monotonic() - self._last >= self.every_s:
            print(line, file=sys.stdout, flush=True)
            self._printed = line
        self._last = time.monotonic()

    def _seen(self, trial_id: str, result: dict[str, Any] | None) -> None:
        value = (result or {}).get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        if self._best is None or (value > self._best[0] if self.mode == "max" else value < self._best[0]):
            self._best = (float(value), trial_id)

    def _end(self, trial: Any, error: bool) -> None:
        self._running.discard(trial.trial_id)
        epoch = int((trial.last_result or {}).get("epoch", 0))
        error = error or bool(fatal_error(trial.last_result))
        self._ended[trial.trial_id] = (
            "failed" if error else ("completed" if epoch >= self.budget else "stopped")
        )
        self._print()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._first_step:  # a resumed run: count what the restored experiment already finished
            self._first_step = False
            for t in trials:
                if t.status in ("TERMINATED", "ERROR"):
                    self._end(t, t.status == "ERROR")
                self._seen(t.trial_id, t.last_result)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._running.add(trial.trial_id)
        self._ended.pop(trial.trial_id, None)
        self._print()

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._seen(trial.trial_id, result)
        if time.monotonic() - self._last >= self.every_s:
            self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, error=False)
        self._print()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, error=True)
        self._print()


class TrainGroupReaper(Callback):
    """Removes the placement group of a ``ray-train`` trial's Train run once the trial has ended.

    When Tune stops a trial (ASHA, or the budget reached), it ends the trial's actor while ``TorchTrainer.fit``
    is still running in it; the Train controller dies with it and its workers' placement group outlives it
    (a placement group lives as long as its creator *and* the job). Ray 2.60's detached cleaner removes it
    only where the State API (the dashboard) answers, so without a dashboard the reserved CPUs/GPUs would
    stay taken and later trials would wait forever. Rank 0 reports its group's id with every epoch
    (``train_placement_group``); a few seconds after the trial ends, the driver removes the group if it
    still exists.
    """

    KEY = "train_placement_group"

    def __init__(self, grace_s: float = 5.0) -> None:
        self.grace_s = grace_s
        self._current: dict[str, str] = {}
        self._pending: list[tuple[float, str]] = []

    def __getstate__(self) -> dict[str, Any]:  # nothing worth restoring: a new driver is a new Ray job
        return {"grace_s": self.grace_s, "_current": {}, "_pending": []}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(self.KEY):
            self._current[trial.trial_id] = str(result[self.KEY])

    def _ended(self, trial: Any) -> None:
        group = self._current.pop(trial.trial_id, None)
        if group:
            self._pending.append((time.monotonic(), group))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    on_trial_error = on_trial_recover = on_trial_complete

    def _reap(self, older_than: float) -> None:
        import ray
        from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

        now, keep = time.monotonic(), []
        for ended, group in self._pending:
            if now - ended < older_than:
                keep.append((ended, group))
                continue
            pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group)))
            try:
                if placement_group_table(pg).get("state") != "REMOVED":
                    remove_placement_group(pg)
                    log.info("removed the placement group %s left by a stopped Ray Train run", group[:12])
            except Exception as exc:  # noqa: BLE001 - best effort; Ray frees it when the job ends anyway
                log.warning("could not remove placement group %s: %s", group[:12], exc)
        self._pending = keep

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._pending:
            self._reap(self.grace_s)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:
            self._ended(trial)
        self._reap(0.0)
