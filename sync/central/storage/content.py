"""What writes and reads do to campaigns, products, store metadata, assets and orders, once for both engines.

Each engine runs these inside one of its transactions through a `Db` (its SQL dialect behind `rows`/`run`,
written here with `?` placeholders, and its own content-feed write). A campaign's writes are serialized by
its row (`FOR UPDATE` on PostgreSQL; SQLite serializes every writer).

The content feed keeps one entry per (target, entity), entity `campaign:<id>`, `product:<sku>` or
`store:<store>`; the target is `*` (every store) or one store. An entry names what changed, not what the
store is sent: a page resolves each entity for the reading store at read time (the campaign version live
there, or withdrawn; the product with the store's price), so a staged rollout, a rollback or a store that
leaves a campaign's tags are one entry each. An entry's `version` is its feed position, which grows with
every change of the entity: the edge applies an entry only when newer than what it holds (a rollback's
campaign version goes back, its entry version does not).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from sync import protocol as p
from sync.central import content as c
from sync.central.storage.common import CentralError, Conflict, NotFound, dumps


# The same tables in both engines (BLOB is bytea in PostgreSQL, see pg_schema.py).
CONTENT_SCHEMA = """
CREATE TABLE assets (sha256 TEXT PRIMARY KEY, content_type TEXT NOT NULL, size INTEGER NOT NULL,
    body BLOB NOT NULL, created_at REAL NOT NULL);
CREATE TABLE products (sku TEXT PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL);
CREATE TABLE store_meta (store TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE campaigns (id TEXT PRIMARY KEY, name TEXT NOT NULL, latest INTEGER NOT NULL, live TEXT NOT NULL,
    history TEXT NOT NULL, withdrawn INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE campaign_versions (campaign_id TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL,
    created_at REAL NOT NULL, published_at REAL, PRIMARY KEY (campaign_id, version));
CREATE TABLE campaign_status (campaign_id TEXT NOT NULL, store TEXT NOT NULL, version INTEGER, state TEXT,
    reason TEXT, at REAL, shown INTEGER NOT NULL DEFAULT 0, reached INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, store));
CREATE TABLE orders (order_id TEXT PRIMARY KEY, customer_id TEXT, store TEXT, body TEXT NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX orders_customer ON orders (customer_id)
"""


class Db(Protocol):
    """One engine transaction (or read snapshot) as the content rules need it."""

    now: float
    for_update: str  # " FOR UPDATE" where the engine locks rows, else ""

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> int: ...

    def content_feed(self, target: str, entity: str) -> None:
        """Put (target, entity) at the end of the content feed (one entry per pair)."""


# --- assets -----------------------------------------------------------------------------------------------


def put_asset(db: Db, sha: str, content_type: str, data: bytes) -> bool:
    """Store an asset once; True when it is new."""
    return bool(db.rows("INSERT INTO assets(sha256, content_type, size, body, created_at) VALUES (?,?,?,?,?) "
                        "ON CONFLICT (sha256) DO NOTHING RETURNING sha256", (sha, content_type, len(data), data,
                                                                              db.now)))


def get_asset(db: Db, sha: str) -> tuple[str, bytes] | None:
    rows = db.rows("SELECT content_type, body FROM assets WHERE sha256 = ?", (sha,))
    return (rows[0][0], bytes(rows[0][1])) if rows else None


def missing_assets(db: Db, shas: list[str]) -> list[str]:
    have = {r[0] for sha in shas for r in db.rows("SELECT sha256 FROM assets WHERE sha256 = ?", (sha,))}
    return [s for s in shas if s not in have]


def list_assets(db: Db) -> list[dict[str, Any]]:
    return [{"sha256": r[0], "content_type": r[1], "size": r[2], "created_at": r[3]}
            for r in db.rows("SELECT sha256, content_type, size, created_at FROM assets ORDER BY created_at")]


# --- products ---------------------------------------------------------------------------------------------


def put_product(db: Db, sku: str, body: dict[str, Any]) -> dict[str, Any]:
    rows = db.rows("SELECT version FROM products WHERE sku = ?" + db.for_update, (sku,))
    version = (int(rows[0][0]) if rows else 0) + 1
    db.run("INSERT INTO products(sku, body, version, deleted, updated_at) VALUES (?,?,?,0,?) ON CONFLICT (sku) "
           "DO UPDATE SET body = excluded.body, version = excluded.version, deleted = 0, "
           "updated_at = excluded.updated_at",
           (sku, dumps(body), version, db.now))
    db.content_feed(c.ALL, f"product:{sku}")
    return {"sku": sku, "version": version, **body}


def delete_product(db: Db, sku: str) -> dict[str, Any]:
    rows = db.rows("SELECT version, deleted FROM products WHERE sku = ?" + db.for_update, (sku,))
    if not rows or rows[0][1]:
        raise NotFound(f"no product {sku!r}")
    version = int(rows[0][0]) + 1
    db.run("UPDATE products SET version = ?, deleted = 1, updated_at = ? WHERE sku = ?", (version, db.now, sku))
    db.content_feed(c.ALL, f"product:{sku}")
    return {"sku": sku, "version": version, "deleted": True}


def list_products(db: Db) -> list[dict[str, Any]]:
    return [{"sku": sku, "version": v, **json.loads(body)}
            for sku, body, v in db.rows("SELECT sku, body, version FROM products WHERE deleted = 0 ORDER BY sku")]


# --- stores -----------------------------------------------------------------------------------------------


def put_store(db: Db, store: str, body: dict[str, Any]) -> dict[str, Any]:
    """Set a store's metadata (fields given replace stored ones). Its tags decide which campaigns reach it,
    so every campaign gets an entry in that store's feed (resolved again when it reads)."""
    rows = db.rows("SELECT body FROM store_meta WHERE store = ?" + db.for_update, (store,))
    meta = {**(json.loads(rows[0][0]) if rows else {}), **body}
    db.run("INSERT INTO store_meta(store, body, updated_at) VALUES (?,?,?) ON CONFLICT (store) DO UPDATE SET "
           "body = excluded.body, updated_at = excluded.updated_at", (store, dumps(meta), db.now))
    db.content_feed(store, f"store:{store}")
    for (cid,) in db.rows("SELECT id FROM campaigns ORDER BY id"):
        db.content_feed(store, f"campaign:{cid}")
    return {"store": store, **c.store_entry(meta)}


def store_metas(db: Db) -> dict[str, dict[str, Any]]:
    return {s: json.loads(b) for s, b in db.rows("SELECT store, body FROM store_meta ORDER BY store")}


def store_tags(db: Db, store: str) -> list[str]:
    rows = db.rows("SELECT body FROM store_meta WHERE store = ?", (store,))
    return list(json.loads(rows[0][0]).get("tags") or []) if rows else []


# --- campaigns --------------------------------------------------------------------------------------------


def _state(row: tuple[Any, ...]) -> c.CampaignState:
    cid, name, latest, live, history, withdrawn = row
    return c.CampaignState(id=cid, name=name, latest=int(latest), live={k: int(v) for k, v in json.loads(live).items()},
                           history=json.loads(history), withdrawn=bool(withdrawn))


_CAMPAIGN_COLS = "id, name, latest, live, history, withdrawn"


def _locked(db: Db, cid: str) -> c.CampaignState:
    rows = db.rows(f"SELECT {_CAMPAIGN_COLS} FROM campaigns WHERE id = ?" + db.for_update, (cid,))
    if not rows:
        raise NotFound(f"no campaign {cid!r}: create it with PUT /v1/admin/campaigns/{cid}")
    return _state(rows[0])


def put_campaign(db: Db, cid: str, body: dict[str, Any]) -> dict[str, Any]:
    """A new draft version (every PUT makes one); nothing changes at any store until it is published."""
    db.run("INSERT INTO campaigns(id, name, latest, live, history, withdrawn, created_at, updated_at) "
           "VALUES (?,?,0,'{}','[]',0,?,?) ON CONFLICT (id) DO NOTHING", (cid, body["name"], db.now, db.now))
    state = _locked(db, cid)
    version = state.latest + 1
    db.run("INSERT INTO campaign_versions(campaign_id, version, body, created_at) VALUES (?,?,?,?)",
           (cid, version, dumps(body), db.now))
    db.run("UPDATE campaigns SET latest = ?, name = ?, updated_at = ? WHERE id = ?",
           (version, body["name"], db.now, cid))
    return {"id": cid, "version": version}


def _versions(db: Db, cid: str) -> dict[int, dict[str, Any]]:
    return {int(v): json.loads(b) for v, b in db.rows("SELECT version, body FROM campaign_versions WHERE "
                                                      "campaign_id = ? ORDER BY version", (cid,))}


def _save_live(db: Db, state: c.CampaignState, live: dict[str, int], history: list[dict[str, int]],
               withdrawn: bool) -> None:
    db.run("UPDATE campaigns SET live = ?, history = ?, withdrawn = ?, updated_at = ? WHERE id = ?",
           (dumps(live), dumps(history), int(withdrawn), db.now, state.id))
    db.content_feed(c.ALL, f"campaign:{state.id}")


def publish(db: Db, cid: str, stores: list[str] | None, version: int | None = None) -> dict[str, Any]:
    """Make the latest draft (or `version`) live at `stores` (None: every store it targets)."""
    state = _locked(db, cid)
    version = version or state.latest
    versions = _versions(db, cid)
    body = versions.get(version)
    if body is None:
        raise NotFound(f"campaign {cid!r} has no version {version}")
    live = {} if state.withdrawn else dict(state.live)
    if stores is None:
        live = {c.ALL: version}  # every target; staged versions give way to it
    else:
        for store in stores:
            if not c.targets_store(body["targets"], store, store_tags(db, store)):
                raise CentralError(f"stores: {store!r} is not among the targets of campaign {cid!r} version "
                                   f"{version} (stores {body['targets']['stores']}, tags {body['targets']['tags']}): "
                                   "publish to targeted stores, or add it to the targets in a new draft")
            live[store] = version
    history = [*state.history, live_before(state)]
    _save_live(db, state, live, history, False)
    db.run("UPDATE campaign_versions SET published_at = ? WHERE campaign_id = ? AND version = ? AND "
           "published_at IS NULL", (db.now, cid, version))
    return {"id": cid, "version": version, "live": live}


def live_before(state: c.CampaignState) -> dict[str, int]:
    return {} if state.withdrawn else dict(state.live)


def rollback(db: Db, cid: str) -> dict[str, Any]:
    """Undo the last publication: what was live before it is live again (nothing, if nothing was)."""
    state = _locked(db, cid)
    if not state.history:
        raise Conflict(f"campaign {cid!r} was never published: there is nothing to roll back")
    live = state.history[-1]
    _save_live(db, state, live, state.history[:-1], False)
    return {"id": cid, "live": live}


def withdraw(db: Db, cid: str) -> dict[str, Any]:
    """Nothing of the campaign shows anywhere any more (a later publish brings it back)."""
    state = _locked(db, cid)
    _save_live(db, state, {}, [*state.history, live_before(state)], True)
    return {"id": cid, "withdrawn": True}


def campaign_states(db: Db, cid: str | None = None) -> list[c.CampaignState]:
    if cid is None:
        return [_state(r) for r in db.rows(f"SELECT {_CAMPAIGN_COLS} FROM campaigns ORDER BY id")]
    return [_state(r) for r in db.rows(f"SELECT {_CAMPAIGN_COLS} FROM campaigns WHERE id = ?", (cid,))]


def campaign_status(db: Db, cid: str) -> dict[str, dict[str, Any]]:
    return {r[0]: {"version": r[1], "state": r[2], "reason": r[3], "at": r[4], "shown": r[5], "reached": r[6]}
            for r in db.rows("SELECT store, version, state, reason, at, shown, reached FROM campaign_status WHERE "
                             "campaign_id = ? ORDER BY store", (cid,))}


def campaign_detail(db: Db, cid: str) -> dict[str, Any] | None:
    """The campaign with every version and what each store reported (the app adds the per-store view)."""
    states = campaign_states(db, cid)
    if not states:
        return None
    state = states[0]
    rows = db.rows("SELECT version, body, created_at, published_at FROM campaign_versions WHERE campaign_id = ? "
                   "ORDER BY version", (cid,))
    versions = [{"version": int(v), **json.loads(b), "created_at": ca, "published_at": pa} for v, b, ca, pa in rows]
    return {"state": state, "versions": versions, "status": campaign_status(db, cid)}


# --- the store channel (resolved at read time) ------------------------------------------------------------


def resolve_entries(db: Db, store: str, entries: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """Content-feed entries (position, entity) in feed order → what `store` is sent, one per entity (the
    newest position is its version)."""
    newest: dict[str, int] = {}
    for position, entity in entries:
        newest[entity] = max(position, newest.get(entity, 0))
    tags = store_tags(db, store)
    skus = [e.partition(":")[2] for e in newest if e.startswith("product:")]
    products: dict[str, tuple[str, int]] = {}
    for i in range(0, len(skus), 500):  # one query per 500 products, not one each
        chunk = skus[i:i + 500]
        products.update((sku, (body, deleted)) for sku, body, deleted in db.rows(
            f"SELECT sku, body, deleted FROM products WHERE sku IN ({','.join('?' * len(chunk))})", tuple(chunk)))
    out = []
    for entity, version in sorted(newest.items(), key=lambda kv: kv[1]):
        kind, _, key = entity.partition(":")
        if kind == "campaign":
            states = campaign_states(db, key)
            live = c.resolved_campaign(states[0], _versions(db, key), store, tags) if states else None
            if live is None:
                out.append({"kind": "campaign", "id": key, "version": version, "op": "withdrawn"})
            else:
                out.append({"kind": "campaign", "id": key, "version": version, "op": "live", "campaign": live})
        elif kind == "product":
            found = products.get(key)
            if found is None or found[1]:
                out.append({"kind": "product", "sku": key, "version": version, "op": "delete"})
            else:
                out.append({"kind": "product", "sku": key, "version": version, "op": "upsert",
                            "product": c.resolved_product(key, json.loads(found[0]), store)})
        elif kind == "store":
            rows = db.rows("SELECT body FROM store_meta WHERE store = ?", (key,))
            meta = json.loads(rows[0][0]) if rows else {}
            out.append({"kind": "store", "version": version, "store": c.store_entry(meta)})
    return out


# --- reports from stores (campaign events) ----------------------------------------------------------------


def apply_campaign_event(db: Db, store: str, e: p.WireEvent) -> str:
    """A store's report on a campaign: applied / refused (the newest report wins) or impressions (added)."""
    data = e.data
    cid = data["id"]
    if not db.rows("SELECT 1 FROM campaigns WHERE id = ?", (cid,)):
        return "campaign:unknown_campaign"
    rows = db.rows("SELECT version, at FROM campaign_status WHERE campaign_id = ? AND store = ?" + db.for_update,
                   (cid, store))
    if not rows:
        db.run("INSERT INTO campaign_status(campaign_id, store, version, state, reason, at, shown, reached) "
               "VALUES (?,?,NULL,NULL,NULL,NULL,0,0) ON CONFLICT (campaign_id, store) DO NOTHING", (cid, store))
        rows = [(None, None)]
    if e.type == "impressions":
        db.run("UPDATE campaign_status SET shown = shown + ?, reached = reached + ? WHERE campaign_id = ? AND "
               "store = ?", (int(data.get("shown") or 0), int(data.get("reached") or 0), cid, store))
        return "campaign:impressions"
    old_at = rows[0][1]
    if old_at is not None and old_at > e.ts:
        return f"campaign:{e.type}:stale"  # a newer report is already kept
    db.run("UPDATE campaign_status SET version = ?, state = ?, reason = ?, at = ? WHERE campaign_id = ? AND store = ?",
           (data["version"], e.type, data.get("reason") if e.type == "refused" else None, e.ts, cid, store))
    return f"campaign:{e.type}"


# --- orders -----------------------------------------------------------------------------------------------


def get_order(db: Db, order_id: str, lock: bool = False) -> dict[str, Any] | None:
    rows = db.rows("SELECT body, customer_id, store, state FROM orders WHERE order_id = ?"
                   + (db.for_update if lock else ""), (order_id,))
    if not rows:
        return None
    body = json.loads(rows[0][0])
    return {**body, "customer_id": rows[0][1], "store": rows[0][2], "state": rows[0][3]}


def save_order(db: Db, order: dict[str, Any]) -> None:
    body = {k: v for k, v in order.items() if k not in ("customer_id", "store", "state")}
    db.run("INSERT INTO orders(order_id, customer_id, store, body, state, created_at, updated_at) VALUES "
           "(?,?,?,?,?,?,?) ON CONFLICT (order_id) DO UPDATE SET body = excluded.body, state = excluded.state, "
           "updated_at = excluded.updated_at",
           (order["order_id"], order.get("customer_id"), order.get("store"), dumps(body), order["state"], db.now,
            db.now))


def order_customer(db: Db, order_id: str) -> str | None:
    rows = db.rows("SELECT customer_id FROM orders WHERE order_id = ?", (order_id,))
    return rows[0][0] if rows else None


def orders_of(db: Db, customer_id: str) -> list[dict[str, Any]]:
    """Every order of a shopper, with contact and payment (right of access)."""
    return [{**json.loads(body), "store": store, "state": state, "created_at": created}
            for body, store, state, created in db.rows("SELECT body, store, state, created_at FROM orders WHERE "
                                                       "customer_id = ? ORDER BY created_at", (customer_id,))]
