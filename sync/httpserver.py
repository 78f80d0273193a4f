"""The HTTP server of the edge and of the central store: waitress, hardened so one client cannot take it down.

waitress holds no worker thread for a connection that has not sent a whole request, which is most of
what a store on guest Wi-Fi needs. On its own, though, it stops accepting anyone at `connection_limit`
(200 idle sockets from one phone took `/healthz` down), waits forever for a header sent a byte a second,
and reads any body, spooling it to /tmp, before the app can refuse it. Here:

- a body over `max_body_bytes` is refused with a JSON 413 as soon as the headers say so
  (Content-Length), or as soon as a chunked body passes the cap; the rest is never read and nothing is
  spooled to disk (the input buffer is kept in memory up to the cap);
- a request must arrive whole within `request_timeout_s` of its first byte (slow-header attacks);
- one client address keeps at most `per_client` connections and the server at most `connection_limit`
  (trusted reverse proxies are exempt from the first): past either, the connection that has waited
  longest without a request in service (idle keep-alive, or a request still arriving) is closed to make
  room, so a newcomer is served and a request being answered (a page stream too) is never cut;
- the event loop uses poll(), not select() (which fails past 1024 descriptors), and the open-file
  limit is raised to fit the connection limit when the system allows it.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from sync.clients import TrustedProxies

log = logging.getLogger("instore_edge.http")

FD_RESERVE = 128  # descriptors kept for the database, MQTT, logs and the worker threads
MAX_HEADER_BYTES = 32 * 1024  # request line + headers (tokens and cookies fit many times over)
WARN_EVERY_S = 60.0
LINGER_S = 2.0  # after answering and closing, how long input is still read (and dropped) before the socket goes
LINGER_BYTES = 64 * 1024 * 1024  # ... and how much of it at most


@dataclass(frozen=True)
class ServerLimits:
    """What one client may take of the server; see the module docstring."""

    max_body_bytes: int
    connection_limit: int = 1000
    per_client: int | None = 64  # None: no per-client cap (a server only proxies and stores talk to)
    request_timeout_s: float = 20.0
    idle_timeout_s: float = 30.0
    trusted: TrustedProxies = field(default_factory=TrustedProxies)


_ERROR_CODES = {400: "bad_request", 413: "payload_too_large", 431: "headers_too_large", 500: "internal_error",
                501: "not_implemented"}


class JsonErrorTask(ErrorTask):
    """waitress's own error answers (413, 431, 400, 500) as the API's JSON errors instead of plain text."""

    def execute(self) -> None:
        error = self.request.error
        server = self.channel.server
        status = int(error.code)
        if status == 413:
            message = (f"request body larger than {server.limits.max_body_bytes} bytes; the server did not "
                       "read it: send a smaller one")
        elif status == 431:
            message = f"request headers larger than {MAX_HEADER_BYTES} bytes"
        elif status == 500:
            message = "unexpected error; the server log has the details"
        else:
            message = str(error.body)[:200]
        body = json.dumps({"error": {"code": _ERROR_CODES.get(status, "error"), "message": message}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.channel.linger_on_close = True  # the client may still be sending what was refused
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):
    """One connection; remembers when the request now arriving began, for the request timeout."""

    error_task_class = JsonErrorTask
    request_started: float | None = None
    linger_on_close = False  # an error answer: the request's input was not all read
    linger_until: float | None = None  # closing: the answer is sent, the client's input is read and dropped
    lingered = 0

    def __init__(self, server: GuardedServer, sock: socket.socket, addr: Any, adj: Adjustments,
                 map: dict | None = None) -> None:
        self.client = str(addr[0]) if isinstance(addr, tuple) and addr else ""
        super().__init__(server, sock, addr, adj, map=map)
        server.track(self)

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.time()
        try:
            return super().received(data)
        finally:
            if self.request is None:
                self.request_started = None  # nothing half-received: every request so far is complete

    def del_channel(self, map: dict | None = None) -> None:
        super().del_channel(map)
        self.server.untrack(self)

    # --- a lingering close: the answer to a refused upload must reach the client --------------------------
    # After an error answer (JsonErrorTask), closing a socket whose input is not all read sends a reset, and a reset makes the client's kernel drop
    # what it had not yet read: the 413 to a client still sending its 300 MB would be lost. So the write side
    # is shut first (the client sees the answer, then the end), and input is read and dropped until the client
    # closes, for at most LINGER_S or LINGER_BYTES (as web servers do: nginx's lingering_close).

    def handle_close(self) -> None:
        if self.linger_on_close and self.linger_until is None and self.connected:
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.linger_until = time.monotonic() + LINGER_S
                self.will_close = self.close_when_flushed = False
                return
        super().handle_close()

    def readable(self) -> bool:
        return True if self.linger_until is not None else super().readable()

    def writable(self) -> bool:
        if self.linger_until is not None:
            return time.monotonic() > self.linger_until  # then handle_write closes it for good
        return super().writable()

    def handle_write(self) -> None:
        if self.linger_until is not None:
            super().handle_close()
            return
        super().handle_write()

    def handle_read(self) -> None:
        if self.linger_until is None:
            super().handle_read()
            return
        try:
            data = self.recv(self.adj.recv_bytes)
        except OSError:
            data = b""
        self.lingered += len(data)
        if not data or self.lingered > LINGER_BYTES or time.monotonic() > self.linger_until:
            super().handle_close()

    def waiting_since(self) -> float | None:
        """When it started waiting without a request in service (None: one is in service or queued)."""
        if self.requests:
            return None
        return self.request_started if self.request_started is not None else self.last_activity


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server with the limits of ServerLimits (one listening socket)."""

    channel_class = GuardedChannel

    def __init__(self, application: Any, limits: ServerLimits, *,
                 on_drop: Callable[[str], None] | None = None, **kw: Any) -> None:
        self.limits = limits
        self.on_drop = on_drop
        self.by_client: dict[str, set[GuardedChannel]] = {}
        self._warned: dict[str, float] = {}
        super().__init__(application, **kw)

    # --- bookkeeping (event-loop thread) -------------------------------------------------------------
    def track(self, channel: GuardedChannel) -> None:
        self.by_client.setdefault(channel.client, set()).add(channel)

    def untrack(self, channel: GuardedChannel) -> None:
        mine = self.by_client.get(channel.client)
        if mine is not None:
            mine.discard(channel)
            if not mine:
                del self.by_client[channel.client]

    def _dropped(self, reason: str, message: str) -> None:
        if self.on_drop is not None:
            self.on_drop(reason)
        now = time.monotonic()
        if now - self._warned.get(reason, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[reason] = now
            log.warning("%s (said at most once a minute)", message)

    @staticmethod
    def _longest_waiting(channels: Iterable[GuardedChannel]) -> GuardedChannel | None:
        best, best_t = None, 0.0
        for ch in channels:
            t = ch.waiting_since()
            if t is not None and (best is None or t < best_t):
                best, best_t = ch, t
        return best

    def _make_room(self, client: str) -> bool:
        """Close what must go for one more connection from `client`; False when nothing can (all busy)."""
        limits = self.limits
        mine = self.by_client.get(client)
        if limits.per_client is not None and mine and len(mine) >= limits.per_client \
                and client not in limits.trusted:
            victim = self._longest_waiting(mine)
            if victim is None:
                self._dropped("per_client", f"client {client} has {len(mine)} connections all in service "
                              f"(http.connections_per_client = {limits.per_client}): refusing another")
                return False
            self._dropped("per_client", f"client {client} opened more than {limits.per_client} connections "
                          "(http.connections_per_client): closing its longest-waiting ones")
            victim.handle_close()
        if len(self.active_channels) >= limits.connection_limit:
            victim = self._longest_waiting(self.active_channels.values())
            if victim is None:
                self._dropped("limit", f"all {limits.connection_limit} connections are in service "
                              "(http.connection_limit): refusing new ones")
                return False
            self._dropped("limit", f"{limits.connection_limit} connections open (http.connection_limit): "
                          "closing the longest-waiting idle or unfinished ones")
            victim.handle_close()
        return True

    # --- waitress hooks ------------------------------------------------------------------------------
    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting)  # never stop accepting: _make_room keeps the table in bounds

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
            if pair is None:
                return
            conn, addr = pair
            self.set_socket_options(conn)
        except OSError:
            log.warning("accept() failed (out of file descriptors? raise LimitNOFILE)", exc_info=True)
            return
        client = str(addr[0]) if isinstance(addr, tuple) and addr else ""
        if not self._make_room(client):
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        """Close idle keep-alive connections after idle_timeout_s and requests still arriving after
        request_timeout_s (a header or body trickled a byte at a time)."""
        idle_cutoff = now - self.limits.idle_timeout_s
        slow_cutoff = now - self.limits.request_timeout_s
        for ch in list(self.active_channels.values()):
            if ch.requests or ch.will_close:
                continue
            started = getattr(ch, "request_started", None)
            if started is not None and started < slow_cutoff:
                ch.will_close = True
                self._dropped("slow_request", f"a request from {getattr(ch, 'client', '?')} did not arrive "
                              f"whole within {self.limits.request_timeout_s:g} s (http.request_timeout_s): "
                              "closing such connections")
            elif started is None and ch.last_activity < idle_cutoff:
                ch.will_close = True


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft open-file limit towards `needed` (up to the hard limit); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def create_server(app: Any, *, host: str, port: int, threads: int, limits: ServerLimits, ident: str,
                  on_drop: Callable[[str], None] | None = None) -> GuardedServer:
    """A GuardedServer for `app` on host:port (port 0: a free one; see `.effective_port`); call `.run()`."""
    files = raise_open_files_limit(limits.connection_limit + FD_RESERVE + threads)
    if files < limits.connection_limit + FD_RESERVE:
        fitted = max(16, files - FD_RESERVE)
        log.warning("the open-file limit is %d: serving at most %d connections instead of %d "
                    "(http.connection_limit); raise LimitNOFILE in the systemd unit", files, fitted,
                    limits.connection_limit)
        limits = ServerLimits(limits.max_body_bytes, fitted, limits.per_client, limits.request_timeout_s,
                              limits.idle_timeout_s, limits.trusted)
    adj = Adjustments(
        host=host, port=port, threads=threads, ident=ident,
        asyncore_use_poll=True,
        # Our limits, checked by GuardedServer; waitress's own stop-accepting limit stays out of the way.
        connection_limit=limits.connection_limit + FD_RESERVE,
        channel_timeout=max(1, int(limits.idle_timeout_s)),
        cleanup_interval=1,
        # Refused at the headers (Content-Length), or as soon as a chunked body passes the cap; a body
        # is buffered in memory up to the cap, never spooled to a temporary file.
        max_request_body_size=limits.max_body_bytes + 1,
        inbuf_overflow=limits.max_body_bytes + 64 * 1024,
        max_request_header_size=MAX_HEADER_BYTES,
        # Lets a page stream notice a client that went away (and free its thread).
        channel_request_lookahead=1,
    )
    if len(adj.listen) != 1:
        raise ValueError(f"http.host {host!r} resolves to {len(adj.listen)} addresses: give one address "
                         "(e.g. 0.0.0.0 or 127.0.0.1)")
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    return GuardedServer(app, limits, on_drop=on_drop, map={}, dispatcher=dispatcher, adj=adj,
                         sockinfo=adj.listen[0])
