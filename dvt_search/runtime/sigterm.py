"""A trial process ended by SIGTERM says nothing on the terminal: no "Exception ignored in" block.

How Tune ends a trial's process: when a trial ends (or, with actor re-use, when the family's experiment
ends and its cached process is let go) Tune runs the trainable's ``stop`` in the process and, once it
returned, removes the trial's placement group; the raylet answers by sending the worker process SIGTERM
(SIGKILL 200 ms later if it is still there). Ray's worker handles SIGTERM in Python
(``ray._private.worker.Worker.main_loop``): the handler raises ``SystemExit`` in the main thread, wherever
Python code runs there at that moment.

That moment may fall in a finalizer: the main thread drops the finished trial's objects (Tune's session
and thread, whose weak references call back into Python: ``threading``'s ``WeakSet`` of threads,
``weakref.finalize`` callbacks, ``__del__``). An exception cannot leave a finalizer: Python prints it as
"Exception ignored in: <function WeakSet.__init__.<locals>._remove ...> Traceback ... SystemExit: 1" on the
process's stderr, which Ray forwards to the driver's terminal, and the exit the signal asked for is
dropped with it (the raylet's SIGKILL ends the process instead; after a plain SIGTERM it lives on).

:func:`install`, called by every trial (from the trial's thread), sets up two pieces:

* a ``sys.unraisablehook`` that recognises exactly that case (a ``SystemExit`` raised by the process's
  SIGTERM handler, swallowed by a finalizer): it prints nothing and delivers the SIGTERM again once the
  main thread has left the hook (``_thread.interrupt_main`` from a helper thread), so the handler raises
  at the main thread's next step and Ray's orderly worker exit runs as for any other SIGTERM. Every
  other unraisable exception goes to the hook that was there before (printed as always);
* on the main thread (``signal.signal`` only works there; the trial's code runs in Tune's thread, so the
  main thread is asked through a pending call, ``Py_AddPendingCall``), Ray's SIGTERM handler wrapped so
  that a SIGTERM that arrives while the main thread is inside that hook is not raised there (it would
  be printed as an error of the hook) but delivered when the hook ends.

Nothing is lost by the exit itself: what a trial writes goes through :mod:`dvt_search.fsutil` (atomic).
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

UnraisableHook = Callable[[Any], None]


def _handler_codes() -> set[Any]:
    """Code objects of the SIGTERM handler now installed and of the one it wraps (if it is ours)."""
    handler = signal.getsignal(signal.SIGTERM)
    codes = {getattr(handler, "__code__", None)}
    inner = getattr(handler, "wrapped", None)
    codes.add(getattr(inner, "__code__", None))
    codes.discard(None)
    return codes


def _raised_by(tb: TracebackType | None, codes: set[Any]) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code in codes:
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
    codes = _handler_codes()
    return bool(codes) and _raised_by(unraisable.exc_traceback, codes)


class _QuietSigtermExit:
    """The ``sys.unraisablehook`` :func:`install` sets (a class, so a second install finds the first)."""

    def __init__(self, previous: UnraisableHook) -> None:
        self.previous = previous
        self.busy = False  # the main thread is inside this hook
        self.pending = False  # a SIGTERM to deliver when the hook ends

    def _deliver_after(self) -> None:
        """Helper thread: mark SIGTERM pending once the main thread has left the hook (off the main
        thread ``interrupt_main`` only marks it; the handler runs at the main thread's next step)."""
        while self.busy:
            time.sleep(0.001)
        _thread.interrupt_main(signal.SIGTERM)

    def __call__(self, unraisable: Any) -> None:
        self.busy = True
        try:
            if is_sigterm_exit(unraisable):
                self.pending = True
            else:
                self.previous(unraisable)
        finally:
            self.busy = False
            if self.pending:
                self.pending = False
                # RuntimeError: interpreter shutdown, no thread can start (and the process is ending)
                with contextlib.suppress(RuntimeError):
                    _thread.start_new_thread(self._deliver_after, ())


#: the hook's own code: a SIGTERM handled while one of these runs waits for the hook to end
_HOOK_CODES = frozenset({_QuietSigtermExit.__call__.__code__, is_sigterm_exit.__code__})


def _in_hook(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _HOOK_CODES:
            return True
        frame = frame.f_back
    return False


class _GuardedHandler:
    """Ray's SIGTERM handler, except while the main thread is inside the quiet hook (see the module)."""

    def __init__(self, wrapped: Callable[[int, FrameType | None], Any], hook: _QuietSigtermExit) -> None:
        self.wrapped, self.hook = wrapped, hook

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        if self.hook.busy or _in_hook(frame):
            self.hook.pending = True
            return None
        return self.wrapped(signum, frame)


def _guard_handler(hook: _QuietSigtermExit) -> None:
    """Wrap the SIGTERM handler (main thread only; a Python-level handler only, once)."""
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler) and not isinstance(handler, _GuardedHandler):
        signal.signal(signal.SIGTERM, _GuardedHandler(handler, hook))


_PENDING_CALL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_scheduled: list[Any] = []  # the ctypes callback must outlive the pending call


def _on_main_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on the main thread: now if this is it, else at its next step (``Py_AddPendingCall``)."""
    if threading.current_thread() is threading.main_thread():
        fn()
        return

    def call(_arg: Any) -> int:
        with contextlib.suppress(Exception):  # a failed wrap leaves Ray's handler as it is
            fn()
        return 0

    callback = _PENDING_CALL(call)
    _scheduled.append(callback)
    ctypes.pythonapi.Py_AddPendingCall.argtypes = [_PENDING_CALL, ctypes.c_void_p]
    ctypes.pythonapi.Py_AddPendingCall(callback, None)


def install() -> None:
    """Make a SIGTERM that lands in a finalizer end this process quietly (see the module docstring).

    Idempotent (a re-used trial process calls it once per trial); callable from any thread.
    """
    hook = sys.unraisablehook
    if not isinstance(hook, _QuietSigtermExit):
        hook = _QuietSigtermExit(hook)
        sys.unraisablehook = hook
    if not isinstance(signal.getsignal(signal.SIGTERM), _GuardedHandler):
        _on_main_thread(lambda: _guard_handler(hook))
