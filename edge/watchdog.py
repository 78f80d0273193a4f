"""Every long-lived thread is watched: one that dies fails /healthz, and the service exits to be restarted.

A thread that ends with an exception leaves a Python process alive and deaf: the writer used to die on
one message while /healthz still said ok and the broker kept everything. `threading.excepthook` records
which thread died and where (the exception's type and line, never its message: it may quote personal
data); a watched thread that ended without one while the service runs counts as dead too.
`App.run_forever` checks every WATCH_S and exits with EXIT_THREAD_DIED, so systemd (Restart=on-failure)
starts a fresh process; /healthz answers 503 with the dead threads meanwhile.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

from edge.text import traceback_text, where_raised

log = logging.getLogger(__name__)

EXIT_THREAD_DIED = 70  # EX_SOFTWARE: an internal error; systemd's Restart=on-failure restarts the service
WATCH_S = 0.5

_deaths: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()
_installed = False
_install_lock = threading.Lock()


def _excepthook(args: threading.ExceptHookArgs) -> None:
    thread = args.thread
    if thread is None or args.exc_value is None:
        return
    where = where_raised(args.exc_value)
    _deaths[thread] = where
    log.critical("thread %s died: %s\n%s", thread.name, where, traceback_text(args.exc_value))


def install() -> None:
    """Route uncaught thread exceptions here (once per process: the hook is global)."""
    global _installed
    with _install_lock:
        if not _installed:
            threading.excepthook = _excepthook
            _installed = True


class Watchdog:
    """The threads one service must keep alive, by name, each through a getter (a thread may not exist yet)."""

    def __init__(self) -> None:
        install()
        self._threads: dict[str, Callable[[], threading.Thread | None]] = {}
        self.stopping = False

    def watch(self, name: str, thread: Callable[[], threading.Thread | None]) -> None:
        self._threads[name] = thread

    def dead(self) -> dict[str, str]:
        """Name -> why, for each watched thread that died (an exception) or ended while it should run."""
        out: dict[str, str] = {}
        for name, get in self._threads.items():
            t = get()
            if t is None:
                continue
            why = _deaths.get(t)
            if why is not None:
                out[name] = why
            elif not self.stopping and t.ident is not None and not t.is_alive():
                out[name] = "ended"
        return out
