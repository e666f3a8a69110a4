"""The run's Optuna journal file: finding and repairing a torn last record (plain file I/O).

Optuna's ``JournalFileBackend`` appends one JSON record per line, in one write under its lock file. A
process killed mid-write (the search's head node lost, the driver SIGKILLed) leaves a *torn* last line: a
record without its newline, or (rarely) a line that is not valid JSON. Optuna reads past a torn tail,
but its next append continues that line, and from then on every read of the journal fails (``study.ask()``
raises): a resumed search could never continue.

:func:`repair_journal` (called wherever the journal is opened: the searcher, closing a family's study,
the report's reader) finds a torn tail by looking only at the file's last line, copies the whole file to
a backup next to it first, then truncates it to its last complete record and says so in one warning line
naming the file and the bytes dropped. An intact journal is not touched (nor copied).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

#: A torn journal's backup: ``optuna.journal.torn-<UTC time>.bak`` next to the journal.
BACKUP_SUFFIX = ".torn-{stamp}.bak"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class JournalRepair:
    """What :func:`repair_journal` did: the bytes it dropped and where the untouched original went."""

    path: Path
    dropped_bytes: int
    kept_bytes: int
    backup: Path | None


def _last_line_start(f, end: int) -> int:
    """Offset where the line ending at ``end`` (exclusive; its own newline excluded) starts."""
    pos = end
    while pos > 0:
        step = min(_CHUNK, pos)
        f.seek(pos - step)
        chunk = f.read(step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
    return 0


def complete_size(path: str | os.PathLike[str]) -> int:
    """Bytes of ``path`` up to the end of its last complete record (the file's size when it is intact).

    A complete record is a line that ends with a newline and holds valid JSON; only the tail is examined.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            f.seek(end - 1)
            if f.read(1) != b"\n":  # torn: no newline after the last record
                end = _last_line_start(f, end)
                continue
            start = _last_line_start(f, end - 1)
            f.seek(start)
            try:
                json.loads(f.read(end - start))
            except ValueError:  # a whole line that is no record
                end = start
                continue
            return end
        return 0


def _lock(path: Path):
    """Optuna's own journal lock (the one its file backend takes for each append), or ``None``."""
    try:
        from optuna.storages.journal import JournalFileSymlinkLock
    except ImportError:  # pragma: no cover - optuna is a dependency
        return None
    return JournalFileSymlinkLock(str(path))


def repair_journal(
    path: str | os.PathLike[str], *, backup: bool = True, label: str | os.PathLike[str] | None = None
) -> JournalRepair | None:
    """Truncate a torn journal to its last complete record; ``None`` when it is intact or missing.

    Args:
        path: the journal file.
        backup: copy the whole file to ``<name>.torn-<UTC time>.bak`` first (``False`` only for a private
            copy, such as the report's).
        label: the file to name in the warning (default ``path``; the report names the run's journal).

    Holds Optuna's journal lock meanwhile, so a live writer is never cut mid-append.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = _lock(path)
    if lock is not None:
        lock.acquire()
    try:
        size = path.stat().st_size
        keep = complete_size(path)
        if keep == size:
            return None
        saved = None
        if backup:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            saved = path.with_name(path.name + BACKUP_SUFFIX.format(stamp=stamp))
            shutil.copy2(path, saved)
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    finally:
        if lock is not None:
            lock.release()
    where = f"; the original is kept as {saved}" if saved else ""
    log.warning(
        "%s: torn last record (a writer killed mid-write): dropped its %d byte(s), kept %d%s",
        label or path,
        size - keep,
        keep,
        where,
    )
    return JournalRepair(path, size - keep, keep, saved)
