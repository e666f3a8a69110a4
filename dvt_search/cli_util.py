"""Helpers shared by the rooms' command-line modules."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def fail(exc: BaseException, prefix: str = "error") -> int:
    """Print an expected error as one line on stderr (the traceback only at debug level); exit code 1."""
    log.debug("command failed", exc_info=exc)
    print(f"{prefix}: {exc}", file=sys.stderr)
    return 1
