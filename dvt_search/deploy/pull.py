"""Fetch a cluster run's results for local reporting/export (``dvt-search pull RUN_URI --out DIR``).

``RUN_URI`` is a local path or any URI :func:`pyarrow.fs.FileSystem.from_uri` understands (``file://``,
``s3://``, ``gs://``, ``hdfs://``...; credentials come from the usual environment of that store). Copied:
the run's small files (``run.json``, ``splits.json``, selection / comparison / leaderboard / prediction
tables, the Optuna journal, search-space snapshots), every trial's ``trial.json`` and ``metrics.jsonl``,
and the checkpoints of the selected models only. Without a ``selection.json`` the winners are chosen here
from the trial records (validation metric only) so that ``dvt-search select`` can run locally later.

The copy is built in a temporary sibling of ``--out`` and moved into place when complete.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from dvt_search.fsutil import atomic_directory
from dvt_search.rundir import layout

log = logging.getLogger(__name__)


def _open(uri: str):  # -> tuple[pyarrow.fs.FileSystem, str]
    from pyarrow import fs

    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    return fs.FileSystem.from_uri(uri)


def _copy(filesystem, src: str, dst: Path) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with filesystem.open_input_stream(src) as fin, open(dst, "wb") as fout:
        while block := fin.read(1 << 20):
            fout.write(block)
            n += len(block)
    return n


def _files(filesystem, base: str, recursive: bool = True) -> list[str]:
    from pyarrow import fs

    infos = filesystem.get_file_info(fs.FileSelector(base, recursive=recursive, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == fs.FileType.File)


def _rel(path: str, base: str) -> PurePosixPath:
    return PurePosixPath(path).relative_to(PurePosixPath(base))


def pull(run_uri: str, out: str | os.PathLike[str]) -> Path:
    """Copy a run's results and its winners' checkpoints to the local directory ``out``."""
    from pyarrow import fs

    filesystem, base = _open(run_uri)
    base = base.rstrip("/")
    if filesystem.get_file_info(f"{base}/{layout.RUN_FILE}").type != fs.FileType.File:
        raise FileNotFoundError(f"{run_uri}: not a dvt-search run (no {layout.RUN_FILE})")
    out = Path(out)
    total = 0
    with atomic_directory(out) as tmp:
        for name in layout.SUMMARY_FILES:
            if filesystem.get_file_info(f"{base}/{name}").type == fs.FileType.File:
                total += _copy(filesystem, f"{base}/{name}", tmp / name)
        for path in _files(filesystem, f"{base}/{layout.SPACES_DIR}"):
            total += _copy(filesystem, path, tmp / _rel(path, base))
        for path in _files(filesystem, f"{base}/{layout.TRIALS_DIR}"):
            rel = _rel(path, base)
            if (
                rel.name in layout.TRIAL_RECORD_FILES and len(rel.parts) == 4
            ):  # trials/<family>/<trial>/<file>
                total += _copy(filesystem, path, tmp / rel)
        for ckpt in _winner_checkpoints(tmp):
            files = _files(filesystem, f"{base}/{ckpt}")
            if not files:
                raise FileNotFoundError(f"{run_uri}: checkpoint {ckpt} of a selected model is missing")
            for path in files:
                total += _copy(filesystem, path, tmp / _rel(path, base))
    log.info("pulled %s into %s (%.1f MB)", run_uri, out, total / 1e6)
    return out


def _winner_checkpoints(local_run: Path) -> list[str]:
    """Checkpoint paths (relative to the run) of the selected models, from selection.json or the records."""
    from dvt_search.selection.documents import read_selection
    from dvt_search.selection.leaderboard import collect
    from dvt_search.selection.selector import choose

    run = layout.RunDir(local_run)
    if run.selection_file.is_file():
        sel = read_selection(local_run)
        return sorted(c["winner"]["checkpoint"] for c in sel["families"].values() if c["winner"])
    lb = collect(run)
    # checkpoints are not local yet: trust the records' has_checkpoint flag for the choice
    flags = {(r.family, r.trial_id): r.has_checkpoint for r in run.iter_trials()}
    lb["has_checkpoint"] = [flags[(f, t)] for f, t in zip(lb["family"], lb["trial_id"])]
    lb["checkpoint"] = [
        run.checkpoint_dir(f, t).relative_to(run.path).as_posix()
        for f, t in zip(lb["family"], lb["trial_id"])
    ]
    info = run.read_info()
    choice = choose(lb, info.metric, info.mode, families=info.families)
    return sorted(w.checkpoint for w in choice.winners.values())
