"""A trial process ended by SIGTERM says nothing on the terminal: no "Exception ignored in" block.

How Tune ends a trial's process: when a trial ends (or, with actor re-use, when the family's experiment
ends and its cached process is let go) Tune runs the trainable's ``stop`` in the process, asks it to exit
(``__ray_terminate__``) and removes its placement group at once. The raylet answers the removal by
sending the worker process SIGTERM (SIGKILL 200 ms later if it is still there). Ray's worker handles
SIGTERM in Python (``ray._private.worker.Worker.main_loop``): the handler raises ``SystemExit`` in the
main thread, wherever Python code runs there at that moment.

The main thread at that moment is often running finalizers: Tune's ``stop`` drops the finished trial's
session and thread, whose weak references call back into Python (``threading``'s ``WeakSet`` of threads,
``weakref.finalize`` callbacks, ``__del__`` methods). An exception cannot leave a finalizer: Python prints
it as "Exception ignored in: <function WeakSet.__init__.<locals>._remove ...> Traceback ... SystemExit: 1"
on the process's stderr, which Ray forwards to the driver's terminal, and the exit the signal asked for
is dropped with it (the raylet's SIGKILL ends the process instead).

:func:`install` adds, in the trial process, a ``sys.unraisablehook`` that recognises exactly that case
(a ``SystemExit`` raised by the process's own SIGTERM handler and swallowed by a finalizer): it prints
nothing and re-arms the SIGTERM (``_thread.interrupt_main``), so the handler raises again at the main
thread's next step outside the finalizer and Ray's orderly worker exit runs as for any other SIGTERM.
Every other unraisable exception goes to the hook that was there before (Python's prints it as always).
Nothing is lost by the exit itself: what a trial writes goes through :mod:`dvt_search.fsutil` (atomic).
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

UnraisableHook = Callable[[Any], None]


def _handler_code(handler: Any) -> Any:
    """The code object of a Python-level signal handler (``None`` for ``SIG_DFL``/``SIG_IGN``/C handlers)."""
    return getattr(handler, "__code__", None)


def _raised_by(tb: TracebackType | None, code: Any) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def is_sigterm_exit(unraisable: Any) -> bool:
    """Whether an unraisable exception is the ``SystemExit`` of this process's SIGTERM handler.

    Args:
        unraisable: what ``sys.unraisablehook`` receives (``exc_type``, ``exc_value``, ``exc_traceback``).
    """
    if not (isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, SystemExit)):
        return False
    code = _handler_code(signal.getsignal(signal.SIGTERM))
    return code is not None and _raised_by(unraisable.exc_traceback, code)


def _deliver_after(hook: _QuietSigtermExit) -> None:
    """Helper thread: mark SIGTERM pending once the main thread has left ``hook``.

    Off the main thread, ``interrupt_main`` only marks the signal: its handler runs at the main thread's
    next step. (Marked from the main thread, it would run at the hook's own next bytecode, and its
    ``SystemExit`` would be printed as an exception of the hook.)
    """
    while hook.busy:
        time.sleep(0.001)
    _thread.interrupt_main(signal.SIGTERM)


class _QuietSigtermExit:
    """The hook :func:`install` sets (a class, so a second install can recognise the first)."""

    def __init__(self, previous: UnraisableHook) -> None:
        self.previous = previous
        self.busy = False  # the main thread is inside this hook

    def _rearm(self) -> None:
        # RuntimeError: interpreter shutdown, no thread can start (and the process is ending anyway)
        with contextlib.suppress(RuntimeError):
            _thread.start_new_thread(_deliver_after, (self,))

    def __call__(self, unraisable: Any) -> None:
        if not is_sigterm_exit(unraisable):
            self.previous(unraisable)
            return
        self.busy = True
        try:
            self._rearm()
        except SystemExit:  # an earlier re-armed SIGTERM landed in here: deliver it once more
            self._rearm()
        finally:
            self.busy = False


def install() -> None:
    """Make a SIGTERM that lands inside a finalizer end this process quietly (see the module docstring).

    Idempotent (a re-used trial process calls it once per trial); safe from any thread.
    """
    if not isinstance(sys.unraisablehook, _QuietSigtermExit):
        sys.unraisablehook = _QuietSigtermExit(sys.unraisablehook)
