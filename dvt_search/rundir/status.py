"""The per-family table of a run's trials, read from the run directory alone (no Ray, no driver).

``dvt-search status RUN_DIR`` prints it at any time, also while a search is running (on another machine,
from the shared storage): the records are rewritten atomically by the driver on every change, so the table
is a consistent snapshot of each trial. Example::

    [vgg16] 6/20 finished: 2 running | 3 completed | 2 stopped | 1 failed (metric val_auc, max)
      trial     state      epochs  best val_auc  params
      a1b2c3d4  running    4/10    0.7132 @3     lr=0.0003 batch_size=16
      ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .layout import RunDir
from .records import STATUSES, TrialRecord

#: Order of the rows within a family: live trials first, then by best value.
_STATE_ORDER = {"running": 0, "pending": 1, "completed": 2, "stopped": 3, "failed": 4}


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _params(params: dict[str, Any], width: int) -> str:
    text = " ".join(f"{k}={_value(v)}" for k, v in sorted(params.items()))
    return text if len(text) <= width else text[: width - 3] + "..."


def _best(rec: TrialRecord, metric: str) -> str:
    value = rec.best.get(metric)
    if value is None:
        return "-"
    return f"{value:.4f} @{rec.best_epoch}" if rec.best_epoch is not None else f"{value:.4f}"


def _sorted(records: Iterable[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    sign = -1.0 if mode == "max" else 1.0

    def key(r: TrialRecord) -> tuple[int, float, str]:
        value = r.best.get(metric)
        return (
            _STATE_ORDER.get(r.status, 9),
            sign * value if value is not None else float("inf"),
            r.trial_id,
        )

    return sorted(records, key=key)


def family_table(
    family: str, records: list[TrialRecord], *, metric: str, mode: str, total: int, width: int = 60
) -> list[str]:
    """The lines of one family's table (a summary line, a header, one row per trial)."""
    counts = {s: sum(1 for r in records if r.status == s) for s in STATUSES}
    ended = counts["completed"] + counts["stopped"] + counts["failed"]
    states = " | ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    head = f"[{family}] {ended}/{total} finished: {states or 'no trials yet'} (metric {metric}, {mode})"
    if not records:
        return [head]
    rows = [("trial", "state", "epochs", f"best {metric}", "params")]
    for r in _sorted(records, metric, mode):
        params = _params(r.params, width)
        if r.status == "failed" and r.error:
            params = f"{params}  error: {r.error}"
        rows.append((r.trial_id, r.status, f"{r.epochs}/{r.max_epochs}", _best(r, metric), params))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [head]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        lines.append("  " + "  ".join([*cells, row[4]]).rstrip())
    return lines


def status_lines(run: RunDir, family: str | None = None) -> list[str]:
    """Every family's table of the run (``family``: only that one).

    Raises:
        FileNotFoundError: ``run`` holds no run (no ``run.json``).
        ValueError: ``family`` is not one of the run's families.
    """
    info = run.read_info()
    cfg = info.config
    families = list(cfg.families)
    if family is not None:
        if family not in families:
            raise ValueError(f"{run.path}: the run has no family {family!r} (it has {', '.join(families)})")
        families = [family]
    lines = [f"run {run.path}"]
    for fam in families:
        lines += family_table(
            fam, run.trials(fam), metric=cfg.metric, mode=cfg.mode, total=cfg.budget.trials_for(fam)
        )
    return lines


def live_records(run: RunDir, family: str) -> list[TrialRecord]:
    """The family's trial records as they are now, skipping any that vanish or are unreadable meanwhile.

    Safe while a search writes the run (a resumed run removes records of trials its Tune state never
    knew); :meth:`RunDir.trials` would raise on such a race.
    """
    root = run.trial_dir(family, "_").parent
    try:
        ids = sorted(p.name for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    return [rec for rec in (run.read_trial(family, i) for i in ids) if rec is not None]


def progress_line(
    run: RunDir,
    families: Iterable[str],
    *,
    total: int | Mapping[str, int],
    metric: str,
    mode: str,
    finished: Iterable[str] = (),
) -> str:
    """One progress line over families, read from the records on disk (any process may run the trials).

    ``total``: trials per family, one number or per family (``--budget``).

    Example: ``[sift 6/6 done (finished) | vgg16 3/20 done, 2 running, best val_auc 0.7132]``.
    """
    done_fams = set(finished)
    parts = []
    for fam in families:
        records = live_records(run, fam)
        ended = sum(r.status in ("completed", "stopped", "failed") for r in records)
        running = sum(r.status == "running" for r in records)
        values = [r.best[metric] for r in records if metric in r.best]
        best = (max(values) if mode == "max" else min(values)) if values else None
        text = f"{fam} {ended}/{total[fam] if isinstance(total, Mapping) else total} done"
        if running:
            text += f", {running} running"
        failed = sum(r.status == "failed" for r in records)
        if failed:
            text += f", {failed} failed"
        if best is not None:
            text += f", best {metric} {best:.4f}"
        if fam in done_fams:
            text += " (finished)"
        parts.append(text)
    return "[" + " | ".join(parts) + "]"


def family_done(run: RunDir, family: str, total: int) -> bool:
    """Whether the family's search is over: ``total`` trials recorded and every one of them ended."""
    records = live_records(run, family)
    return len(records) >= total and all(r.status in ("completed", "stopped", "failed") for r in records)
