"""What writes do to profiles, once for both engines: merge rules, consent and identity events, erasure,
merge, versions that only grow, and which stores each change goes to.

Each engine runs these inside one of its transactions through a `Tx` (its SQL for each step). Every
operation first locks the customers it touches (`Tx.lock`, in sorted order so two writers never wait on
each other in a circle); the lock is the customer's row in `versions` (keyed by erase key, so a live
customer, an erased one and one asked to be erased by hash share it), held to the end of the transaction.
A version is the locked row's value plus one: it never goes backwards, across erasure and re-creation.

Which stores hear of a change (the feed's targets): the shopper's home store, the stores where an order
waits for them, and the stores that saw them (an event naming them, or an on-demand fetch) in the last
`relevant_for_s`; a profile with no home store goes to every store (`*`) when `broadcast_unhomed` is set.
A store that a change stops concerning still gets that one change (a "final" entry), so every store that
was sent a version of a profile is sent the next one (a consent withdrawn reaches every copy); erasures go
to every store.
"""

from __future__ import annotations

from typing import Any, Protocol

from datetime import datetime, timezone

from sync import protocol as p
from sync.central.storage import content
from sync.central.storage.common import ALL_STORES, CentralError, Conflict, NotFound, Settings

TIER_RANK = {tier: rank for rank, tier in enumerate(p.TIERS)}


class Tx(Protocol):
    """One engine transaction, as the profile rules need it."""

    now: float
    settings: Settings

    def lock(self, keys: list[str]) -> dict[str, int]:
        """Lock these customers (erase keys) to the end of the transaction; their versions (0: never seen)."""

    def set_version(self, key: str, version: int) -> None: ...

    def load(self, ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def find_by_key(self, key: str) -> str | None:
        """The id of the live customer with this erase key."""

    def owners(self, keys: list[str]) -> dict[str, str]: ...

    def claim_identities(self, customer_id: str, keys: list[str]) -> dict[str, str]:
        """Make `keys` exactly the customer's identities; returns {key: owner} for keys another customer
        holds (those stay theirs)."""

    def consent_times(self, customer_id: str) -> dict[str, float]: ...

    def set_consent_time(self, customer_id: str, purpose: str, ts: float) -> None: ...

    def recent_stores(self, customer_id: str, since: float) -> list[str]: ...

    def write_profile(self, profile: dict[str, Any]) -> None: ...

    def delete_customer(self, customer_id: str) -> None:
        """Profile, identities, consent times, store relevance: every row naming the customer, but events."""

    def anonymize_events(self, customer_id: str, keys: list[str]) -> int: ...

    def repoint_events(self, from_id: str, into_id: str) -> None: ...

    def feed_targets(self, customer_id: str) -> dict[str, bool]:
        """The customer's feed entries now: target → final."""

    def feed_write(self, customer_id: str, version: int, targets: dict[str, bool]) -> None:
        """Replace the customer's feed entries (and any erasure entry under their hash) with these
        (target → final), each with a new position at the end of the feed."""

    def feed_erase(self, key: str, version: int) -> None:
        """Replace every feed entry of the customer with this erase key by one erasure entry for every store."""


def lock_ids(tx: Tx, ids: list[str]) -> dict[str, int]:
    return tx.lock([p.erase_key(cid) for cid in ids])


def next_version(tx: Tx, customer_id: str | None, key: str | None = None) -> int:
    """The customer's next version (the customer must be locked); recorded at once."""
    key = key or p.erase_key(customer_id or "")
    version = tx.lock([key])[key] + 1
    tx.set_version(key, version)
    return version


def targets(tx: Tx, profile: dict[str, Any]) -> set[str]:
    """The stores this profile's changes go to (see the module docstring)."""
    home = profile.get("home_store")
    if home is None and tx.settings.broadcast_unhomed:
        return {ALL_STORES}
    out = {home} if home else set()
    out.update(o["store"] for o in profile.get("orders_ready") or [] if isinstance(o, dict) and o.get("store"))
    out.update(tx.recent_stores(profile["customer_id"], tx.now - tx.settings.relevant_for_s))
    return out


def save(tx: Tx, profile: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """Write a profile with its next version, index its identities, feed the change. `strict`: an identity
    held by another customer is a Conflict (else the key is left out of this profile)."""
    cid = profile["customer_id"]
    taken = tx.claim_identities(cid, profile["identities"])
    if taken:
        if strict:
            key, owner = next(iter(taken.items()))
            raise Conflict(f"identity {key!r} belongs to customer {owner!r}: remove it there first, or merge the "
                           "two profiles (POST /v1/admin/profiles/merge)")
        profile["identities"] = [k for k in profile["identities"] if k not in taken]
    profile.setdefault("home_store", None)
    profile["version"] = next_version(tx, cid)
    tx.write_profile(profile)
    now_targets = targets(tx, profile)
    entries = {t: False for t in now_targets}
    for target, final in tx.feed_targets(cid).items():
        if target not in now_targets and not final:
            entries[target] = True  # this change is the last that store hears of
    tx.feed_write(cid, profile["version"], entries)
    return profile


def upsert(tx: Tx, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Given fields replace stored ones, consents merge per purpose (see Storage.upsert_profiles).

    Consents set on an existing profile are dated `now`; a consent event from a store applies only when it
    was captured after the newest dated decision for that purpose (last writer wins by capture time)."""
    ids = [f["customer_id"] for f in items]
    lock_ids(tx, sorted(ids))
    stored = tx.load(ids)
    saved = []
    for fields in items:
        cid = fields["customer_id"]
        old = stored.get(cid)
        profile: dict[str, Any] = old or dict(p.empty_profile(cid))
        for key, value in fields.items():
            if key == "consents":
                profile["consents"] = {**profile["consents"], **value}
                if old is not None:  # a new profile's consents are its initial state, not a dated decision
                    for purpose in value:
                        tx.set_consent_time(cid, purpose, tx.now)
            elif key != "version":
                profile[key] = value
        saved.append(save(tx, profile))
    return saved


def erase_profile(tx: Tx, profile: dict[str, Any], *, anonymize: bool) -> tuple[int, int]:
    """Delete the customer's rows and feed the erasure; returns (version, events anonymized)."""
    cid = profile["customer_id"]
    key = p.erase_key(cid)
    version = next_version(tx, cid, key)
    tx.delete_customer(cid)
    anonymized = tx.anonymize_events(cid, list(profile.get("identities") or [])) if anonymize else 0
    tx.feed_erase(key, version)
    return version, anonymized


def erase(tx: Tx, customer_id: str) -> dict[str, Any]:
    key = p.erase_key(customer_id)
    version = tx.lock([key])[key]
    profile = tx.load([customer_id]).get(customer_id)
    if profile is None:
        if version == 0:
            raise NotFound(f"no profile {customer_id!r}")
        return {"customer_id": customer_id, "version": version, "op": "erase", "already_erased": True,
                "events_anonymized": 0}
    version, anonymized = erase_profile(tx, profile, anonymize=True)
    return {"customer_id": customer_id, "version": version, "op": "erase", "events_anonymized": anonymized}


def erase_by_key(tx: Tx, key: str) -> str:
    """A store asked for an erasure by erase key: erase the customer it names, and feed the erasure to every
    store in any case (the asking store keeps the shopper's tombstone pending until it sees it)."""
    known = tx.lock([key])[key] > 0
    cid = tx.find_by_key(key)
    profile = tx.load([cid]).get(cid) if cid is not None else None
    if profile is not None:
        erase_profile(tx, profile, anonymize=True)
        return "erasure"
    tx.feed_erase(key, next_version(tx, None, key))
    return "erasure:already_erased" if known else "erasure:unknown_customer"


def merge(tx: Tx, from_id: str, into_id: str) -> dict[str, Any]:
    """Fold profile `from_id` into `into_id` (same person, two records) and erase `from_id`.

    Lists are united (identities, segments, wishlist, cart; orders by order_id); `into` keeps its name,
    preferences, consents and home store where it has them (the surviving record is the one the customer
    manages), the higher tier wins, and `from`'s events are re-pointed to `into`."""
    if from_id == into_id:
        raise CentralError(f"cannot merge {from_id!r} into itself: name two different customers")
    lock_ids(tx, sorted([from_id, into_id]))
    loaded = tx.load([from_id, into_id])
    for cid in (from_id, into_id):
        if cid not in loaded:
            raise NotFound(f"no profile {cid!r}")
    src, dst = loaded[from_id], loaded[into_id]
    for key in ("identities", "segments", "wishlist", "cart"):
        dst[key] = list(dict.fromkeys([*dst[key], *src[key]]))
    orders = {o["order_id"]: o for o in src["orders_ready"]}
    orders.update({o["order_id"]: o for o in dst["orders_ready"]})
    dst["orders_ready"] = list(orders.values())
    dst["preferences"] = {**src["preferences"], **dst["preferences"]}
    dst["first_name"] = dst["first_name"] or src["first_name"]
    dst["home_store"] = dst.get("home_store") or src.get("home_store")
    tiers = [t for t in (dst["tier"], src["tier"]) if t]
    dst["tier"] = max(tiers, key=lambda t: TIER_RANK.get(t, -1)) if tiers else None
    tx.repoint_events(from_id, into_id)
    erased_version, _ = erase_profile(tx, src, anonymize=False)
    save(tx, dst, strict=False)
    return {"profile": dst, "erased": {"customer_id": from_id, "version": erased_version}}


def customers_of(e: p.WireEvent) -> str | None:
    """The erase key of the customer an event changes, if it changes one (to lock it first)."""
    if e.kind == p.ERASURE_KIND:
        return str(e.data["customer_hash"])
    if (e.is_consent or e.kind in (p.IDENTITY_LINK_KIND, p.SHOPPER_KIND)) and e.customer is not None:
        return p.erase_key(e.customer)
    return None


def applies(e: p.WireEvent) -> bool:
    return e.is_consent or e.kind in (p.ERASURE_KIND, p.IDENTITY_LINK_KIND, p.CAMPAIGN_KIND, p.SHOPPER_KIND)


def apply_event(tx: Tx, e: p.WireEvent) -> str | None:
    """What a newly recorded event does to profiles (its customer locked); the outcome kept with it."""
    if e.is_consent:
        if e.customer is None:
            return "consent:no_customer"
        profile = tx.load([e.customer]).get(e.customer)
        if profile is None:
            return "consent:unknown_customer"
        decided = tx.consent_times(e.customer)
        changed = False
        for purpose, granted in (e.consent or {}).items():
            if purpose not in p.CONSENT_PURPOSES:
                continue
            if decided.get(purpose, float("-inf")) > e.ts:
                continue  # a newer decision is already recorded (events from two stores, out of order)
            tx.set_consent_time(e.customer, purpose, e.ts)
            if profile["consents"].get(purpose) is not granted:
                profile["consents"][purpose] = granted
                changed = True
        if not changed:
            return "consent:unchanged"
        save(tx, profile, strict=False)
        return "consent"
    if e.kind == p.ERASURE_KIND:
        return erase_by_key(tx, str(e.data["customer_hash"]))
    if e.kind == p.IDENTITY_LINK_KIND:
        assert e.customer is not None and e.link_key is not None
        if e.link_key.startswith(p.EPHEMERAL_KEY_PREFIXES):
            return "identity_link:ephemeral"
        owner = tx.owners([e.link_key]).get(e.link_key)
        if owner is not None:
            return "identity_link:unchanged" if owner == e.customer else "identity_link:conflict"
        profile = tx.load([e.customer]).get(e.customer)
        if profile is None:
            return "identity_link:unknown_customer"
        profile["identities"] = list(dict.fromkeys([*profile["identities"], e.link_key]))
        save(tx, profile, strict=False)
        return "identity_link" if e.link_key in profile["identities"] else "identity_link:conflict"
    if e.kind == p.CAMPAIGN_KIND:
        return content.apply_campaign_event(tx, tx.store, e)  # type: ignore[arg-type, attr-defined]
    if e.kind == p.SHOPPER_KIND:
        return apply_shopper_event(tx, e)
    return None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def order_summary(order: dict[str, Any]) -> dict[str, Any]:
    """An order as the shopper's profile shows it (no contact or payment details: those stay in `orders`)."""
    out = {k: order[k] for k in ("order_id", "items", "fulfilment", "state", "placed_at", "store") if k in order}
    if order.get("pickup_store"):
        out["pickup_store"] = order["pickup_store"]
    for key in ("ready_at", "pickup_bay"):
        if order.get(key):
            out[key] = order[key]
    out["returns"] = order.get("returns") or []
    return out


def put_order_on_profile(tx: Tx, customer_id: str | None, order: dict[str, Any],
                         ready: dict[str, Any] | None = None) -> bool:
    """Show the order (and, once ready for pickup, its `orders_ready` entry) on the shopper's profile."""
    if customer_id is None:
        return False
    profile = tx.load([customer_id]).get(customer_id)
    if profile is None:
        return False
    orders = [o for o in profile.get("orders") or [] if o.get("order_id") != order["order_id"]]
    profile["orders"] = [*orders, order_summary(order)]
    if ready is not None:
        waiting = [o for o in profile["orders_ready"] if o.get("order_id") != order["order_id"]]
        profile["orders_ready"] = [*waiting, ready]
    save(tx, profile, strict=False)
    return True


def apply_shopper_event(tx: Tx, e: p.WireEvent) -> str:
    """wishlist_add / wishlist_remove / order_request / return (checked by protocol): the profile changes."""
    data = e.data
    db: Any = tx
    if e.type in ("wishlist_add", "wishlist_remove"):
        assert e.customer is not None
        profile = tx.load([e.customer]).get(e.customer)
        if profile is None:
            return "shopper:unknown_customer"
        sku = data["sku"]
        had = sku in profile["wishlist"]
        if (e.type == "wishlist_add") == had:
            return f"shopper:{e.type}:unchanged"
        profile["wishlist"] = [*profile["wishlist"], sku] if not had else [s for s in profile["wishlist"] if s != sku]
        save(tx, profile, strict=False)
        return f"shopper:{e.type}"
    if e.type == "order_request":
        if content.get_order(db, data["order_id"]) is not None:
            return "shopper:order_request:duplicate_order"
        order = {"order_id": data["order_id"], "items": data["items"], "fulfilment": data["fulfilment"],
                 "state": "requested", "placed_at": iso(e.ts), "store": tx.store,  # type: ignore[attr-defined]
                 "customer_id": e.customer, "returns": []}
        for key in ("pickup_store", "contact", "payment"):
            if data.get(key) is not None:
                order[key] = data[key]
        content.save_order(db, order)
        shown = put_order_on_profile(tx, e.customer, order)
        return "shopper:order_request" if shown or e.customer is None else "shopper:order_request:unknown_customer"
    owner = content.order_customer(db, data["order_id"])
    if owner is not None:
        lock_ids(tx, [owner])
    order = content.get_order(db, data["order_id"], lock=True)
    if order is None:
        return "shopper:return:unknown_order"
    order["returns"] = [*(order.get("returns") or []),
                        {"rma_id": data.get("rma_id"), "items": data["items"], "reason": data.get("reason"),
                         "at": iso(e.ts), "store": tx.store}]  # type: ignore[attr-defined]
    content.save_order(db, order)
    put_order_on_profile(tx, order.get("customer_id"), order)
    return "shopper:return"


def order_ready(tx: Tx, order_id: str, bay: str) -> dict[str, Any]:
    """A pickup order is ready: its state, and the shopper's `orders_ready` at the pickup store."""
    db: Any = tx
    owner = content.order_customer(db, order_id)
    if owner is not None:
        lock_ids(tx, [owner])
    order = content.get_order(db, order_id, lock=True)
    if order is None:
        raise NotFound(f"no order {order_id!r}: orders arrive from the stores as order_request events")
    if order["fulfilment"] != "pickup":
        raise Conflict(f"order {order_id!r} is a home delivery: only a pickup order can be ready at a store")
    order.update(state="ready", ready_at=iso(tx.now), pickup_bay=bay)
    content.save_order(db, order)
    ready = {"order_id": order_id, "items": [i["sku"] for i in order["items"]], "ready_at": order["ready_at"],
             "pickup_bay": bay, "store": order["pickup_store"]}
    put_order_on_profile(tx, order.get("customer_id"), order, ready)
    return {k: v for k, v in order.items() if k not in ("contact", "payment")}


def apply_events(tx: Tx, events: list[p.WireEvent]) -> dict[int, str]:
    """Apply newly recorded events in order (index in `events` → outcome), their customers locked first."""
    keys = sorted({k for e in events if (k := customers_of(e)) is not None})
    if keys:
        tx.lock(keys)
    outcomes: dict[int, str] = {}
    for i, e in enumerate(events):
        if applies(e):
            outcome = apply_event(tx, e)
            if outcome is not None:
                outcomes[i] = outcome
    return outcomes
