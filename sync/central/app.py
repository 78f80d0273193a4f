"""The reference central profile store's HTTP API (Flask app factory).

Store tokens authenticate one store each: a store pushes only its own events, and reads profiles, its
change feed (the changes that concern it, see storage/profiles.py) and identity look-ups. The admin token
does everything, including the /v1/admin API, and reads the whole feed. The data lives behind one
interface (storage.Storage): a SQLite file or a PostgreSQL database, chosen by the `db` argument.
Every error is JSON `{"error": {"code", "message"}}` with the right status; nothing a client sends
makes the server answer with an HTML page or a stack trace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import wraps
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from sync import fastpush, jsonbody, queryargs
from sync import protocol as p
from sync.central import console, content_api, feed_stream, metrics, pages
from sync.central.demo_data import CATALOGUE
from sync.central.pacing import Pacer
from sync.central.storage import CentralError, Housekeeper, InvalidValue, Settings, Storage, body_hash, open_storage
from sync.central.storage.common import rejection_counts, store_row

log = logging.getLogger("instore_central")

ADMIN = "admin"
QUIET_AFTER_S = 120.0  # a store not heard from for this long is "quiet" (it reports every 30 s at least)
STREAM_SPREAD = 0.25  # a feed stream ends after 75-100 % of its wait_s, at random (see changes())
PULL_NOTE_EVERY_S = 10.0  # a store's pulls are noted for the fleet view at most this often (per process)
PULL_FLUSH_EVERY_S = 2.0  # the noted pulls are written together at most this often (per process)


def api_error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


class BadRequest(CentralError):
    """A request the API cannot use (bad JSON, bad parameter)."""


class TooDeep(CentralError):
    """A JSON body nested deeper than any request of the API needs."""

    code = "too_deep"


class TooLarge(CentralError):
    """A request over a size limit."""

    status = 413
    code = "payload_too_large"


def json_body(*, whole_text: bool = True) -> tuple[Any, bytes]:
    """The parsed JSON body and its raw bytes; BadRequest for anything that is not strict JSON, TooDeep
    (checked before parsing, so json never recurses) for absurd nesting.

    With `whole_text`, a lone surrogate anywhere refuses the request (InvalidValue); pushes pass False and
    refuse the one event holding it instead (protocol.WireEvent.from_dict).
    """
    raw = request.get_data(cache=True)  # raises 413 beyond MAX_CONTENT_LENGTH
    if not raw:
        raise BadRequest("empty body: send a JSON object with Content-Type: application/json")
    try:
        body = jsonbody.loads(raw)
    except jsonbody.TooDeep as exc:
        raise TooDeep(str(exc)) from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({str(exc)[:80]})") from None
    if whole_text and p.may_hold_surrogates(raw):
        where = p.lone_surrogate(body)
        if where is not None:
            raise InvalidValue(p.surrogate_detail(where or "body"))
    return body, raw


def events_text(events: list[Any]) -> bytes:
    """A batch's events as one canonical text, for its idempotency hash when the body holds more."""
    return json.dumps(events, separators=(",", ":"), ensure_ascii=True).encode()


def server_timing(app_s: float, db_s: float) -> str:
    """A push answer's Server-Timing: `app` from the request's start in the app to the answer, `db` of it in the
    storage (a database connection, the statement, the commit), in milliseconds."""
    return f"app;dur={app_s * 1000:.1f}, db;dur={db_s * 1000:.1f}"


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    return queryargs.int_arg(name, default, lo, hi, BadRequest)


def float_arg(name: str, default: float, lo: float, hi: float) -> float:
    return queryargs.float_arg(name, default, lo, hi, BadRequest)


def flag_arg(name: str) -> bool:
    return queryargs.flag_arg(name, BadRequest)


def tracked(lines: Iterator[bytes]) -> Iterator[bytes]:
    """A feed stream counted among the waiting feed requests while it is open."""
    with metrics.FEED_WAITERS.track_inprogress():
        yield from lines


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _check_tokens(admin_token: str, store_tokens: Mapping[str, str]) -> None:
    if not admin_token:
        raise ValueError("the admin token is empty: pass --admin-token or set INSTORE_CENTRAL_ADMIN_TOKEN")
    seen: dict[str, str] = {}
    for store, token in store_tokens.items():
        if not p.STORE_ID_RE.fullmatch(store):
            raise ValueError(f"store id {store!r}: expected 1 to 64 letters, digits, '_', '.', '-' (the edge's "
                             "store.id)")
        if not token:
            raise ValueError(f"store {store!r}: the token is empty")
        if token == admin_token:
            raise ValueError(f"store {store!r}: its token is the admin token; give each store its own token")
        if token in seen:
            raise ValueError(f"stores {seen[token]!r} and {store!r} share a token; give each store its own")
        seen[token] = store


def create_app(db: str | Path | Storage, admin_token: str, store_tokens: Mapping[str, str], *,
               max_body_bytes: int = p.MAX_BODY_BYTES, settings: Settings | None = None,
               housekeeping: bool = True, quiet_after_s: float = QUIET_AFTER_S, workers: int = 1) -> Flask:
    """The central store's app on `db`: a Storage, a postgresql:// URL or a SQLite file (created when absent).

    `store_tokens` maps store id → bearer token. The Storage is in app.extensions["central_store"]; with
    `housekeeping`, a thread runs its retention hourly (app.extensions["central_housekeeper"]). Raises
    ValueError for unusable tokens and storage.DatabaseError for an unusable database.
    """
    _check_tokens(admin_token, store_tokens)
    central = db if isinstance(db, Storage) else open_storage(db, settings)
    app = Flask("instore_central")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.json.sort_keys = False
    app.extensions["central_store"] = central
    if housekeeping:
        app.extensions["central_housekeeper"] = Housekeeper(central).start()
    pacer = Pacer(central.settings.push_budget, central.stores_pushing)
    pulls_noted: dict[str, float] = {}
    pulls_pending: dict[str, float] = {}  # store -> when it last pulled, not yet written
    pulls_flushed = [time.monotonic()]
    pulls_lock = threading.Lock()
    # By the token's SHA-256: one dict look-up per request whatever the number of stores (comparing with each
    # of 2,000 tokens cost more than the push), and what the look-up's timing could tell is about a hash.
    tokens = {_digest(admin_token): ADMIN} | {_digest(t): s for s, t in store_tokens.items()}

    def principal(token: str) -> str | None:
        """ADMIN, a store id, or None."""
        return tokens.get(_digest(token))

    def require(scope: str) -> Callable:
        """scope: "admin" (admin token), "any" (any valid token), "own_store" (the path's store or admin)."""

        def wrap(fn: Callable) -> Callable:
            @wraps(fn)
            def inner(*args: Any, **kwargs: Any) -> Any:
                header = request.headers.get("Authorization", "")
                token = header[7:].strip() if header[:7].lower() == "bearer " else ""
                needs = {"admin": "the admin token", "any": "a store token or the admin token",
                         "own_store": f"the token of store {kwargs.get('store')!r} or the admin token"}[scope]
                if not token:
                    return api_error(401, "unauthorized", f"missing bearer token: send 'Authorization: Bearer "
                                     f"<token>' with {needs}")
                who = principal(token)
                if who is None:
                    return api_error(401, "unauthorized", f"unknown token: this endpoint needs {needs}")
                if who != ADMIN:
                    if scope == "admin":
                        return api_error(403, "forbidden", f"this endpoint needs the admin token, not the token "
                                         f"of store {who!r}")
                    if scope == "own_store" and who != kwargs.get("store"):
                        return api_error(403, "forbidden", f"this token belongs to store {who!r}; it cannot act "
                                         f"for store {kwargs.get('store')!r}")
                g.principal = who
                return fn(*args, **kwargs)

            return inner

        return wrap

    def store_of_caller() -> str | None:
        """The store a store token belongs to; None for the admin token."""
        who = g.get("principal")
        return None if who == ADMIN else who

    def note_pull(store: str) -> None:
        """For the fleet view: a store's first pull here is written at once; later ones at most every
        PULL_NOTE_EVERY_S, all stores' together in one transaction (at 300 stores, one commit every few
        seconds instead of 30 a second, each waiting for the disk)."""
        now = time.monotonic()
        batch: dict[str, float] = {}
        with pulls_lock:
            first = store not in pulls_noted
            if first or now - pulls_noted[store] >= PULL_NOTE_EVERY_S:
                pulls_noted[store] = now
                if not first:
                    pulls_pending[store] = time.time()
            if pulls_pending and now - pulls_flushed[0] >= PULL_FLUSH_EVERY_S:
                batch = dict(pulls_pending)
                pulls_pending.clear()
                pulls_flushed[0] = now
        if first:
            central.note_store(store, pulled=True)
        if batch:
            central.note_pulls(batch)

    @app.errorhandler(CentralError)
    def _central_error(exc: CentralError):
        return api_error(exc.status, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        message = exc.description or exc.name
        if exc.code == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.code == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif exc.code == 413:
            message = (f"request body larger than {max_body_bytes} bytes: send smaller batches "
                       f"(at most {p.MAX_BATCH_EVENTS} events)")
        return api_error(exc.code or 500, codes.get(exc.code or 500, "error"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return api_error(500, "internal_error", f"unexpected error ({type(exc).__name__}); the server log has "
                         "the details")

    def count_push(answer: dict[str, Any], sent: int) -> None:
        metrics.PUSH_BATCH.observe(sent)
        for result, key in (("accepted", "accepted"), ("duplicate", "duplicates"), ("rejected", "rejected")):
            if answer[key]:
                metrics.EVENTS.labels(result).inc(len(answer[key]))
        for reason, n in rejection_counts(answer["rejected"]).items():
            metrics.REJECTED.labels(reason).inc(n)

    @app.before_request
    def _started() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "other"
        if rule == "/v1/stores/<store>/events" and request.method == "POST":
            metrics.PUSH_SECONDS.observe(time.perf_counter() - g.get("started", time.perf_counter()))
        metrics.REQUESTS.labels(rule, str(response.status_code)).inc()
        return response

    fleet_collector = metrics.FleetCollector(lambda: fleet(), central.engine, workers, pacer.every_s)

    @app.get("/metrics")
    def prometheus():
        return Response(metrics.render(fleet_collector), mimetype=None, content_type=metrics.CONTENT_TYPE)

    # --- health -----------------------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz():
        central.ping()
        return jsonify({"status": "ok", "service": "instore-central", "engine": central.engine})

    # --- sync protocol ----------------------------------------------------------------------------------

    @app.post("/v1/stores/<store>/events")
    @require("own_store")
    def push_events(store: str):
        if not p.STORE_ID_RE.fullmatch(store):
            raise BadRequest(f"store id {store[:40]!r}: expected 1 to 64 letters, digits, '_', '.', '-'")
        key = request.headers.get(p.IDEMPOTENCY_HEADER)
        if key is not None and not (0 < len(key) <= p.MAX_IDEMPOTENCY_KEY_LEN and key.isprintable()):
            raise BadRequest(f"{p.IDEMPOTENCY_HEADER}: expected 1 to {p.MAX_IDEMPOTENCY_KEY_LEN} printable characters")
        fast = fastpush.decode(request.get_data(cache=True))  # raises 413 beyond MAX_CONTENT_LENGTH
        if fast is not None:  # every event valid, checked in C
            events: list[Any] = fast.events
            has_health, reported = fast.has_health, fast.health
            digest = (body_hash(request.get_data(cache=True)) if not has_health else fast.events_digest) \
                if key is not None else None
        else:  # the exact path: each bad event gets its own rejection
            body, raw = json_body(whole_text=False)
            events = body.get("events") if isinstance(body, dict) else None
            if not isinstance(events, list):
                raise BadRequest('expected {"events": [ {event}, ... ]}')
            if len(events) > p.MAX_BATCH_EVENTS:
                raise TooLarge(f"{len(events)} events in one batch; the limit is {p.MAX_BATCH_EVENTS}: split it")
            has_health, reported = "health" in body, body.get("health")
            # A retry carries fresher health: the batch is its events.
            digest = (body_hash(raw) if len(body) == 1 else body_hash(events_text(events))) \
                if key is not None else None
        health, health_error = None, None
        if has_health:
            try:
                health = p.parse_health(reported)
            except p.InvalidHealth as exc:  # the events matter more: recorded all the same, the edge told why
                health_error = str(exc)
        stored_at = time.perf_counter()
        answer, replayed = central.push_events(store, events, key, digest, health=health)
        in_db = time.perf_counter() - stored_at
        if health_error:
            metrics.HEALTH_ERRORS.inc()
            answer = {**answer, "health_error": health_error}
        if not replayed:  # counted when first answered
            count_push(answer, len(events))
        response = jsonify(answer)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        every_s = pacer.every_s()
        if every_s is not None:
            response.headers[p.PUSH_EVERY_HEADER] = f"{every_s:g}"
        # Where the push's time went inside this process (a slow push with a short `app` waited for a thread or
        # a CPU before it got here): the standard header, read by the fleet benchmark and a browser's tools.
        response.headers["Server-Timing"] = server_timing(time.perf_counter() - g.get("started", stored_at), in_db)
        if answer["accepted"] or answer["rejected"]:
            log.debug("store %s: %d accepted, %d duplicates, %d rejected", store, len(answer["accepted"]),
                      len(answer["duplicates"]), len(answer["rejected"]))
        return response

    @app.get("/v1/profiles/changes")
    @require("any")
    def changes():
        limit = int_arg("limit", p.DEFAULT_CHANGES_LIMIT, 1, p.MAX_CHANGES_LIMIT)
        wait_s = float_arg("wait_s", 0.0, 0.0, p.MAX_CHANGES_WAIT_S)
        store = store_of_caller()
        if store is not None:
            note_pull(store)
        if flag_arg(p.STREAM_PARAM):
            # Streams begun together (every store after a restart, a fleet started at once) would end together
            # every wait_s, and all come back in the same tenth of a second: a request and a feed read each, on
            # top of the pushes (at 300 stores, a burst of slow pushes every 20 s; docs/scale.md). Each ends at
            # a random share of its wait instead, which the edge takes as any stream's end.
            held_s = wait_s * random.uniform(1.0 - STREAM_SPREAD, 1.0)
            body = feed_stream.pages(central.change_stream(request.args.get("since"), limit, store=store,
                                                           wait_s=held_s), closed=lambda: central.signal.closed,
                                     on_page=(lambda: note_pull(store)) if store is not None else lambda: None)
            return Response(tracked(body), mimetype=p.NDJSON,
                            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                            direct_passthrough=True)
        if wait_s <= 0:
            return jsonify(central.changes(request.args.get("since"), limit, store=store))
        with metrics.FEED_WAITERS.track_inprogress():
            return jsonify(central.changes(request.args.get("since"), limit, store=store, wait_s=wait_s))

    @app.get("/v1/profiles/<customer_id>")
    @require("any")
    def get_profile(customer_id: str):
        profile = central.get_profile(customer_id, store=store_of_caller())
        if profile is None:
            return api_error(404, "not_found", f"no profile {customer_id[:p.MAX_ID_LEN]!r}")
        return jsonify(profile)

    @app.post("/v1/identities/resolve")
    @require("any")
    def resolve():
        body, _ = json_body()
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadRequest('expected {"keys": ["device:app-7", "loyalty:1234", ...]}')
        if len(keys) > p.MAX_RESOLVE_KEYS:
            raise TooLarge(f"{len(keys)} keys; the limit is {p.MAX_RESOLVE_KEYS} per request")
        return jsonify({"matches": central.resolve(list(dict.fromkeys(keys)))})

    @app.get("/v1/catalogue")
    @require("any")
    def catalogue():
        return jsonify({"products": [prod.to_dict() for prod in CATALOGUE]})

    # --- admin ------------------------------------------------------------------------------------------

    @app.post("/v1/admin/profiles")
    @require("admin")
    def upsert_profiles():
        body, _ = json_body()
        many = isinstance(body, dict) and "profiles" in body and "customer_id" not in body
        items = body["profiles"] if many else [body]
        if not isinstance(items, list) or not items:
            raise BadRequest('expected a profile object, or {"profiles": [ {profile}, ... ]} with at least one')
        errors: list[str] = []
        fields: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            try:
                fields.append(p.validate_profile(item, path=f"profiles[{i}]." if many else ""))
            except p.InvalidProfile as exc:
                errors += exc.errors
        ids = [f["customer_id"] for f in fields]
        if len(set(ids)) != len(ids):
            errors.append("profiles: the same customer_id appears twice; send one entry per customer")
        if errors:
            return jsonify({"error": {"code": "invalid_profile", "message": "; ".join(errors[:20]),
                                      "errors": errors[:200]}}), 400
        saved = central.upsert_profiles(fields)
        return jsonify({"profiles": saved} if many else saved[0]), 200

    @app.post("/v1/admin/profiles/merge")
    @require("admin")
    def merge():
        body, _ = json_body()
        src = body.get("from") if isinstance(body, dict) else None
        dst = body.get("into") if isinstance(body, dict) else None
        if not isinstance(src, str) or not isinstance(dst, str) or not src or not dst:
            raise BadRequest('expected {"from": "<customer_id to fold and erase>", "into": "<customer_id to keep>"}')
        return jsonify(central.merge(src, dst))

    @app.delete("/v1/admin/profiles/<customer_id>")
    @require("admin")
    def erase(customer_id: str):
        return jsonify(central.erase(customer_id))

    @app.get("/v1/admin/profiles/<customer_id>/export")
    @require("admin")
    def export(customer_id: str):
        found = central.export(customer_id)
        if found is None:
            return api_error(404, "not_found", f"the central store holds nothing about {customer_id[:p.MAX_ID_LEN]!r}")
        found["orders"] = central.orders_of(customer_id)  # with the contact and payment details the profile leaves out
        return jsonify(found)

    def fleet() -> list[dict[str, Any]]:
        """Every store: those heard from, and those with a token never heard from; quietest first."""
        now = time.time()
        rows = {r["store"]: r for r in central.store_rows()}
        for store in store_tokens:
            rows.setdefault(store, store_row(store, None, None, 0))
        for row in rows.values():
            seen = row["last_seen_at"]
            row["quiet_for_s"] = None if seen is None else round(max(0.0, now - seen), 1)
            row["quiet"] = seen is None or now - seen > quiet_after_s
        return sorted(rows.values(), key=lambda r: (r["last_seen_at"] is not None, r["last_seen_at"] or 0, r["store"]))

    app.extensions["central_fleet"] = fleet
    pages.register(app, admin_token, fleet, central.store_rejections, quiet_after_s)

    def known_stores() -> list[str]:
        return [r["store"] for r in fleet()]

    def note_own_pull(store: str) -> None:
        if store_of_caller() == store:
            note_pull(store)

    content_api.register(app, central, require, json_body, known_stores, int_arg, float_arg, note_own_pull)
    console.register(app, admin_token, central, known_stores)

    @app.get("/v1/admin/stores")
    @require("admin")
    def stores():
        return jsonify({"stores": fleet(), "quiet_after_s": quiet_after_s})

    @app.get("/v1/admin/stores/<store>")
    @require("admin")
    def one_store(store: str):
        row = next((r for r in fleet() if r["store"] == store), None)
        if row is None:
            return api_error(404, "not_found", f"no store {store[:64]!r}: it has no token and was never heard from")
        row["rejected"] = central.store_rejections(store)
        return jsonify(row)

    @app.get("/v1/admin/events")
    @require("admin")
    def list_events():
        limit = int_arg("limit", 100, 1, 5000)
        after = int_arg("after", 0, 0, 2**62)
        return jsonify(central.list_events(request.args.get("store") or None, after, limit))

    @app.get("/v1/admin/stats")
    @require("admin")
    def stats():
        return jsonify(central.stats())

    return app
