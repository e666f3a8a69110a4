"""``dvt-search select``: leaderboard -> winners on validation -> (once) test predictions -> comparison."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from dvt_search.selection.selector import SELECTION_FORMAT, choose


def select_run(
    run_path: str | os.PathLike[str],
    *,
    metric: str | None = None,
    mode: str | None = None,
    manifest: str | os.PathLike[str] | None = None,
    evaluate_test: bool = True,
    sensitivities: Sequence[float] = (0.8, 0.9),
    specificities: Sequence[float] = (0.9,),
    n_resamples: int = 2000,
    seed: int = 0,
    device: str | None = None,
    batch_size: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Leaderboard -> choice on validation -> (once) test predictions of the winners -> comparison.

    Writes ``leaderboard.{parquet,csv}``, ``selection.json`` and, with ``evaluate_test``,
    ``val_predictions.parquet``, ``test_predictions.parquet`` and ``comparison.json`` into the run
    directory, and appends the evaluation to the test-evaluation log. A run whose test set was evaluated
    before is refused (:class:`~dvt_search.selection.test_log.TestAlreadyEvaluated`, nothing written)
    unless the settings and winners repeat an earlier evaluation or ``force`` is given
    (:mod:`dvt_search.selection.test_log`). Returns the ``selection.json`` document.
    """
    from dvt_search.data.schema import read_manifest
    from dvt_search.rundir.layout import RunDir
    from dvt_search.selection import test_log
    from dvt_search.selection.documents import write_comparison, write_selection
    from dvt_search.selection.evaluate import (
        predict_winners,
        resolve_manifest,
        verify_splits,
        write_predictions,
    )
    from dvt_search.selection.leaderboard import collect, write_leaderboard
    from dvt_search.selection.models import count_parameters
    from dvt_search.stats.compare import compare

    run = RunDir(run_path)
    info = run.read_info()
    metric, mode = metric or info.metric, mode or info.mode
    lb = collect(run, metric, mode)
    choice = choose(
        lb,
        metric,
        mode,
        families=info.families,
        n_params=lambda r: count_parameters(run.path / r["checkpoint"]),
    )
    level = 0.95
    settings = test_log.settings(metric, mode, sensitivities, specificities, n_resamples, seed, level)
    winners = {f: w.trial_id for f, w in sorted(choice.winners.items())}
    earlier = test_log.previous(run)
    touches_test = evaluate_test and bool(choice.winners)
    reproduces = test_log.check(run, earlier, settings, winners, evaluate_test=touches_test, force=force)
    write_leaderboard(run, lb)  # refused evaluations return above: nothing is overwritten
    doc: dict[str, Any] = {
        "format": SELECTION_FORMAT,
        "run": info.run_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **choice.to_dict(),
        "splits_hash": info.splits_hash,
        "manifest_fingerprint": info.manifest_fingerprint,
        "test": {"evaluated": False},
    }
    if evaluate_test and choice.winners:
        manifest_path = resolve_manifest(run.path, info, manifest)
        manifest_df = read_manifest(manifest_path)
        splits = verify_splits(run.path, info, manifest_df)
        doc["data"] = data_summary(manifest_df, splits)
        preds = predict_winners(
            run, choice.winners, manifest_path, splits, metric=metric, device=device, batch_size=batch_size
        )
        write_predictions(run.path, preds)
        ref = choice.overall.family if choice.overall else None
        comparison = compare(
            preds.val,
            preds.test,
            reference=ref,
            sensitivities=sensitivities,
            specificities=specificities,
            n_resamples=n_resamples,
            seed=seed,
            level=level,
        )
        write_comparison(run.path, comparison)
        doc["search_vs_paper"] = _search_vs_paper(
            run, lb, choice, manifest_path, splits, preds, device, batch_size
        )
        entry = test_log.record(
            run,
            earlier,
            time=doc["created"],
            settings_=settings,
            winners=winners,
            predictions_sha256=test_log.predictions_hash(preds.test),
            comparison_sha256=hashlib.sha256(run.comparison_file.read_bytes()).hexdigest(),
            forced=force,
            reproduces=reproduces,
        )
        doc["test"] = {
            "evaluated": True,
            "evaluated_at": doc["created"],
            "evaluation": entry["n"],
            "settings": settings,
            "families": sorted(choice.winners),
            "n_slices": comparison.get("test", {}).get("n_slices", 0),
            "validation_check": preds.checks,
            "extras": preds.extras,
        }
    elif earlier:
        doc["test"]["previous_evaluations"] = len(earlier)
    write_selection(run.path, doc)
    return doc


def _search_vs_paper(
    run: Any, lb: Any, choice: Any, manifest: Any, splits: Any, preds: Any, *dev: Any
) -> dict:
    """Each family's paper-configuration trial scored on test beside its winner (:mod:`.paper`)."""
    from dvt_search.selection.paper import score_paper_configs

    return score_paper_configs(run, lb, choice, manifest, splits, preds, device=dev[0], batch_size=dev[1])


def data_summary(manifest_df: pd.DataFrame, splits: Any) -> dict[str, Any]:
    """Patients / scans / slices / positives per partition and the manifest's data sources (no ids).

    Besides :func:`~dvt_search.data.splits.summarize`'s counts, each partition records its DVT-positive
    scans and patients (a scan is positive when any of its slices is; a patient when any of its scans is).
    """
    from dvt_search.data.splits import summarize

    frame = summarize(manifest_df, splits).reset_index()
    rows = manifest_df.assign(scan_id=manifest_df["scan_id"].astype(str))
    pos = rows[rows["label"] == 1]
    for name, part in splits.partitions.items():
        ids = {str(s) for s in part}
        sel = frame["partition"] == name
        frame.loc[sel, "positive_scans"] = int(pos.loc[pos["scan_id"].isin(ids), "scan_id"].nunique())
        frame.loc[sel, "positive_patients"] = int(pos.loc[pos["scan_id"].isin(ids), "patient_id"].nunique())
    for col in ("positive_scans", "positive_patients"):
        if col in frame:
            frame[col] = frame[col].fillna(0).astype(int)
    return {
        "partitions": frame.to_dict(orient="records"),
        "sources": sorted(str(s) for s in manifest_df["source"].unique()),
        "anatomy": list(splits.anatomy),
    }
