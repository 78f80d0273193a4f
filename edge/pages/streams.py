"""Server-sent events for the pages: what the writer thread commits, fanned out to per-client queues.

The pipeline calls `Hub.on_display` from the writer thread after each commit: it must never block, so
each client has a small bounded queue; `put_nowait` drops the oldest message for a slow client, which
is harmless because every message carries the screen's whole state (the next one re-syncs it).

Under waitress every open stream holds one worker thread, so streams are bounded: at most
`per_target` per screen or kiosk (a newer stream evicts the oldest, the same client's first: a
reloaded page usually leaves a dead connection behind), `per_client` per client address (so one
device, or one abuser with a token, cannot take every slot), and `max_streams` overall, keeping
threads free for pages and the API. A stream ends when the edge stops, so pages reconnect to the
next edge process.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response

HEARTBEAT_S = 15.0
POLL_S = 1.0  # how often a stream checks for shutdown and a vanished client
QUEUE_SIZE = 4
RETRY_MS = 1000  # EventSource reconnect delay
SSE_HEADERS = {"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}

Target = tuple[str, str]  # ("signage" | "kiosk", screen or kiosk id)


def sse_message(event: str, data: dict[str, Any]) -> bytes:
    """One SSE message; JSON never contains a raw newline, so one data line is enough."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def now_ms() -> int:
    return int(time.time() * 1000)


class StreamsFull(Exception):
    """No stream slot: `per_client` says whether this client's share (429) or every slot (503) is taken."""

    def __init__(self, limit: int, *, per_client: bool) -> None:
        super().__init__(limit)
        self.limit = limit
        self.per_client = per_client


class Stream:
    """One connected page: a bounded queue of encoded messages (None = close)."""

    def __init__(self, target: Target, client: str = "") -> None:
        self.target = target
        self.client = client
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_SIZE)
        self.closed = threading.Event()

    def offer(self, item: bytes | None) -> None:
        """Never blocks: a full queue loses its oldest message."""
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.offer(None)


class Hub:
    """Open streams by target; `on_display` hears every display change the pipeline commits."""

    def __init__(self, render: Callable[[Target, dict[str, Any]], dict[str, Any] | None], *,
                 max_streams: Callable[[], int], per_target: int = 2, per_client: int | None = None) -> None:
        self.render = render
        self.max_streams = max_streams
        self.per_target = per_target
        self.per_client = per_client
        self.lock = threading.Lock()
        self.streams: dict[Target, list[Stream]] = {}
        self.dropped_full = 0

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.streams.values())

    def viewers(self, target: Target) -> int:
        with self.lock:
            return len(self.streams.get(target, ()))

    def open(self, target: Target, client: str = "") -> Stream:
        """A new stream for target from client. A full target loses its oldest stream (this client's first);
        StreamsFull when the client has `per_client` streams elsewhere or every slot is taken."""
        evicted: list[Stream] = []
        with self.lock:
            mine = self.streams.setdefault(target, [])
            if self.per_client is not None:
                theirs = [s for v in self.streams.values() for s in v if s.client == client]
                if len(theirs) >= self.per_client:
                    again = [s for s in mine if s.client == client]  # a reload replaces its own stream
                    if not again:
                        if not mine:
                            self.streams.pop(target, None)
                        raise StreamsFull(self.per_client, per_client=True)
                    mine.remove(again[0])
                    evicted.append(again[0])
            while len(mine) >= self.per_target:
                own = next((s for s in mine if s.client == client), mine[0])
                mine.remove(own)
                evicted.append(own)
            total = sum(len(v) for v in self.streams.values())
            if total >= self.max_streams():
                self.dropped_full += 1
                if not mine:
                    self.streams.pop(target, None)
                full = StreamsFull(self.max_streams(), per_client=False)
            else:
                full = None
                stream = Stream(target, client)
                mine.append(stream)
        for old in evicted:
            old.close()
        if full is not None:
            raise full
        return stream

    def release(self, stream: Stream) -> None:
        with self.lock:
            mine = self.streams.get(stream.target, [])
            if stream in mine:
                mine.remove(stream)
            if not mine:
                self.streams.pop(stream.target, None)
        stream.closed.set()

    def close_all(self) -> None:
        with self.lock:
            streams = [s for v in self.streams.values() for s in v]
        for s in streams:
            s.close()

    def on_display(self, screen: str, payload: dict[str, Any]) -> None:
        """Called from the writer thread after a commit: encode once per target kind, enqueue, never block."""
        with self.lock:
            targets = [(t, list(v)) for t, v in self.streams.items() if t[1] == screen]
        for target, streams in targets:
            view = self.render(target, payload)
            if view is None:
                continue
            message = sse_message("content", {"content": view, "now": now_ms()})
            for s in streams:
                s.offer(message)


    def broadcast(self, event: str, data: dict[str, Any], kinds: tuple[str, ...] = ("signage", "kiosk")) -> int:
        """One message to every open stream of these kinds (a catalogue change): never blocks; the count."""
        message = sse_message(event, {**data, "now": now_ms()})
        with self.lock:
            streams = [s for t, v in self.streams.items() if t[0] in kinds for s in v]
        for s in streams:
            s.offer(message)
        return len(streams)


class EventStream:
    """The WSGI body of one stream. waitress sends each chunk as soon as it is yielded (send_bytes=1)
    and calls close() when the client goes or the stream ends: the stream's slot is freed either way,
    even when the body was never iterated."""

    def __init__(self, hub: Hub, stream: Stream, first: list[bytes], stopping: Callable[[], bool],
                 disconnected: Callable[[], bool] | None) -> None:
        self.hub = hub
        self.stream = stream
        self._gen = self._run(first, stopping, disconnected)

    def __iter__(self) -> Iterator[bytes]:
        return self._gen

    def _run(self, first: list[bytes], stopping: Callable[[], bool],
             disconnected: Callable[[], bool] | None) -> Iterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode() + b"".join(first)
        last_sent = time.monotonic()
        stream = self.stream
        while not stream.closed.is_set() and not stopping():
            try:
                item = stream.queue.get(timeout=POLL_S)
            except queue.Empty:
                item = b""
            if item is None or (disconnected is not None and disconnected()):
                return
            now = time.monotonic()
            if item:
                yield item
                last_sent = now
            elif now - last_sent >= HEARTBEAT_S:
                # A named event (not a comment) so the page's watchdog sees the connection is alive.
                yield sse_message("ping", {"now": now_ms()})
                last_sent = now

    def close(self) -> None:
        try:
            self._gen.close()
        finally:
            self.hub.release(self.stream)


def closing_error(status: int, code: str, message: str) -> Response:
    """A JSON error sent without a Content-Length: waitress closes the connection after it, so a browser
    does not reuse a keep-alive connection to an edge that is stopping."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Response(iter([body]), status=status, mimetype="application/json", direct_passthrough=True)


def sse_response(hub: Hub, stream: Stream, first: list[bytes], stopping: Callable[[], bool],
                 environ: dict[str, Any]) -> Response:
    """A text/event-stream response passed straight to the server (no buffering by werkzeug)."""
    # Set by waitress; it only notices a vanished client when channel_request_lookahead > 0, otherwise
    # the next heartbeat's failed write does.
    disconnected = environ.get("waitress.client_disconnected")
    body = EventStream(hub, stream, first, stopping, disconnected)
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)
