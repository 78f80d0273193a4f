"""Test-only fault injection, from INSTORE_EDGE_TEST_FAULTS; never set it in production.

Once the inputs that killed threads are refused, no real input kills one, yet what the edge does when a
thread dies, a message raises or a message crashes the process must stay tested, against a real
`instore-edge run`. The variable is a comma-separated list of:
- `thread:<name>`: that thread raises InjectedFault when it starts working (pipeline-writer: at its first
  batch holding a message; mqtt: at the first message it receives; http, housekeeping: when they start);
- `raise:<text>`: the writer raises InjectedFault after recording the events of a message whose payload
  contains <text> (a bug in the middle of a batch);
- `crash:<text>`: the process ends at once (os._exit(CRASH_EXIT), like a crash in a C library) when the
  writer starts on a message whose payload contains <text>.
"""

from __future__ import annotations

import os

from edge.model import EdgeError

ENV = "INSTORE_EDGE_TEST_FAULTS"
CRASH_EXIT = 86

THREADS: frozenset[str] = frozenset()
RAISE_ON: tuple[bytes, ...] = ()
CRASH_ON: tuple[bytes, ...] = ()


class InjectedFault(EdgeError, RuntimeError):
    """Raised on purpose, by a test, through INSTORE_EDGE_TEST_FAULTS."""


def configure(spec: str) -> None:
    """Set the faults from a spec like the variable's ("" for none); tests in one process call it directly."""
    global THREADS, RAISE_ON, CRASH_ON
    items = [item.strip() for item in spec.split(",") if item.strip()]

    def texts(kind: str) -> tuple[bytes, ...]:
        return tuple(i.removeprefix(kind).encode() for i in items if i.startswith(kind))

    THREADS = frozenset(i.removeprefix("thread:") for i in items if i.startswith("thread:"))
    RAISE_ON = texts("raise:")
    CRASH_ON = texts("crash:")


def thread_start(name: str) -> None:
    """Called where a watched thread starts working; raises when a test asked this thread to die."""
    if name in THREADS:
        raise InjectedFault(f"{ENV} asked thread {name} to die")


def raise_on(payload: bytes) -> None:
    if any(text in payload for text in RAISE_ON):
        raise InjectedFault(f"{ENV} asked processing this message to fail")


def crash_on(payload: bytes) -> None:
    if any(text in payload for text in CRASH_ON):
        os._exit(CRASH_EXIT)


configure(os.environ.get(ENV, ""))
