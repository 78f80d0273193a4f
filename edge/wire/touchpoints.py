"""The store's own devices, on topics under P: QR scanners, interactive windows, kiosks, POS terminals."""

from __future__ import annotations

import re
from typing import Any

from edge.model import INVALID_VALUE, MISSING_FIELD, WRONG_TYPE, Event, Rejected
from edge.wire.fields import (MAX_ID_LEN, SHOW_MAX, absent, cut, ident_field, show, str_field, ts_field)
from edge.wire.ids import message_id
from edge.wire.inbound import Inbound
from sync.protocol import nested_deeper

WINDOW_TYPES = ("touch", "browse", "select", "handoff")
MAX_CODE_LEN = 4096  # a QR code holds at most ~4.3k characters
MAX_IDENTITY_LEN = 256
MAX_EXTRA_STR_LEN = 256
MAX_EXTRA_FIELDS = 16
MAX_EXTRA_ITEMS = 32
MAX_POS_ITEMS = 1000
MAX_POS_ITEM_DEPTH = 8  # nesting inside one item object: enough for options and bundles, not a stack bomb
MAX_TOTAL = 10**12  # a sale's total, in any currency unit


def qr(msg: Inbound) -> list[Event]:
    """P/qr/{scanner}: a scanned code; identity resolves what it means."""
    obj = msg.obj
    return [Event(event_id=message_id("qr", msg), kind="qr", source=msg.source, ts=ts_field(obj, "", msg.site.tz),
                  received_at=msg.received_at, data={"code": str_field(obj, "code", "", MAX_CODE_LEN)})]


def window(msg: Inbound) -> list[Event]:
    """P/window/{window}: an interaction on a shop window; the zone is known if it is a configured screen."""
    obj = msg.obj
    ts = ts_field(obj, "", msg.site.tz)
    kind = obj.get("type")
    if kind not in WINDOW_TYPES:
        expected = "one of " + ", ".join(f"'{t}'" for t in WINDOW_TYPES)
        if kind is None:
            absent(obj, "type", "", expected, True)
        reason = INVALID_VALUE if type(kind) is str else WRONG_TYPE
        raise Rejected(reason, f"type: expected {expected}, got {show(kind)}")
    session = str_field(obj, "session", "")
    data = {"session": session}
    item = str_field(obj, "item", "", required=False)
    if item is not None:
        data["item"] = item
    return [Event(event_id=message_id("window", msg), kind="window", source=msg.source, ts=ts,
                  received_at=msg.received_at, zone=msg.site.screens.get(msg.source), subject=f"session:{session}",
                  type=kind, data=data)]


_KIOSK_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,31}")
_KIOSK_FIELDS = frozenset({"id", "ts", "type", "customer", "identity", "session", "item"})
_SCALARS = (str, int, float, bool, type(None))


def kiosk(msg: Inbound) -> list[Event]:
    """P/kiosk/{kiosk}/event: identify carries customer or identity; others carry a session."""
    obj = msg.obj
    ts = ts_field(obj, "", msg.site.tz)
    kind = str_field(obj, "type", "", 32)
    if not _KIOSK_TYPE_RE.fullmatch(kind):
        raise Rejected(INVALID_VALUE, f"type: expected a short identifier (letters, digits, '_', '-'), "
                                      f"got {show(kind)}")
    identify = kind == "identify"
    customer = ident_field(obj, "customer", "")
    identity = str_field(obj, "identity", "", MAX_IDENTITY_LEN, required=False)
    if identify and customer is None and identity is None:
        raise Rejected(MISSING_FIELD, "customer or identity: missing; an identify event names the customer id "
                                      "or an identity key (e.g. a loyalty card)")
    session = str_field(obj, "session", "", required=not identify)
    data: dict[str, Any] = {}
    if session is not None:
        data["session"] = session
    item = str_field(obj, "item", "", required=False)
    if item is not None:
        data["item"] = item
    if identity is not None:
        data["identity"] = identity
    _kiosk_extras(obj, data)
    if kind == "consent":
        _check_consent(data.get("consent"))
    zone = msg.site.kiosks.get(msg.source)
    claimed = data.get("zone")
    if zone is None and isinstance(claimed, str) and any(z.id == claimed for z in msg.site.cfg.zones):
        zone = claimed  # a device without a place of its own (a phone's landing page) names the touchpoint's
    return [Event(event_id=message_id("kiosk", msg), kind="kiosk", source=msg.source, ts=ts,
                  received_at=msg.received_at, zone=zone, subject=f"session:{session}" if session else None,
                  customer=customer, type=kind, data=data, known_device=zone is not None)]


def _kiosk_extras(obj: dict[str, Any], data: dict[str, Any]) -> None:
    """Copy type-specific kiosk fields into data: scalars, or a small flat object/list of scalars."""
    extras = [key for key in obj if key not in _KIOSK_FIELDS]
    if len(extras) > MAX_EXTRA_FIELDS:
        raise Rejected(INVALID_VALUE, f"payload: {len(extras)} extra fields, at most {MAX_EXTRA_FIELDS} are kept")
    for key in extras:
        value = obj[key]
        path = cut(key, SHOW_MAX)
        if type(value) is dict or type(value) is list:
            if len(value) > MAX_EXTRA_ITEMS:
                raise Rejected(INVALID_VALUE, f"{path}: at most {MAX_EXTRA_ITEMS} entries, got {len(value)}")
            if type(value) is dict:
                for name, inner in value.items():
                    _check_scalar(inner, f"{path}.{cut(name, SHOW_MAX)}")
            else:
                for index, inner in enumerate(value):
                    _check_scalar(inner, f"{path}[{index}]")
        else:
            _check_scalar(value, path)
        data[key] = value


def _check_scalar(value: Any, path: str) -> None:
    if not isinstance(value, _SCALARS):
        raise Rejected(WRONG_TYPE, f"{path}: expected a string, number, boolean or null, got {show(value)}")
    if type(value) is str and len(value) > MAX_EXTRA_STR_LEN:
        raise Rejected(INVALID_VALUE, f"{path}: expected at most {MAX_EXTRA_STR_LEN} characters, "
                                      f"got {len(value)}")


def _check_consent(consent: Any) -> None:
    """A consent event must say exactly what was granted: {"purpose": true|false, ...}.

    The central applies it to the profile, so a malformed one must not be half-applied later.
    """
    expected = 'an object of purposes to true/false, e.g. {"personalization": true}'
    if consent is None:
        raise Rejected(MISSING_FIELD, f"consent: missing; expected {expected}")
    if type(consent) is not dict:
        raise Rejected(WRONG_TYPE, f"consent: expected {expected}, got {show(consent)}")
    if not consent:
        raise Rejected(INVALID_VALUE, f"consent: empty; expected {expected}")
    for purpose, granted in consent.items():
        if type(granted) is not bool:
            raise Rejected(WRONG_TYPE, f"consent.{cut(purpose, SHOW_MAX)}: expected true or false, "
                                       f"got {show(granted)}")


def pos(msg: Inbound) -> list[Event]:
    """P/pos/{terminal}: a sale (conversion KPIs); the terminal's own receipt id is required."""
    obj = msg.obj
    event_id = f"pos:{msg.source}:{ident_field(obj, 'id', '', required=True)}"
    ts = ts_field(obj, "", msg.site.tz)
    customer = ident_field(obj, "customer", "")
    items = obj.get("items")
    expected_items = "a list of SKUs or item objects"
    if items is None:
        absent(obj, "items", "", expected_items, True)
    if type(items) is not list:
        raise Rejected(WRONG_TYPE, f"items: expected {expected_items}, got {show(items)}")
    if len(items) > MAX_POS_ITEMS:
        raise Rejected(INVALID_VALUE, f"items: at most {MAX_POS_ITEMS} entries, got {len(items)}")
    for index, item in enumerate(items):
        if type(item) is str:
            if not 0 < len(item) <= MAX_ID_LEN:
                raise Rejected(INVALID_VALUE, f"items[{index}]: expected a SKU of 1 to {MAX_ID_LEN} characters, "
                                              f"got {len(item)} characters")
        elif type(item) is not dict:
            raise Rejected(WRONG_TYPE, f"items[{index}]: expected {expected_items}, got {show(item)}")
        elif nested_deeper(item, MAX_POS_ITEM_DEPTH):
            raise Rejected(INVALID_VALUE, f"items[{index}]: nested deeper than {MAX_POS_ITEM_DEPTH} levels")
    total = obj.get("total")
    if type(total) is not int and type(total) is not float:
        if total is None:
            absent(obj, "total", "", "a number", True)
        raise Rejected(WRONG_TYPE, f"total: expected a number, got {show(total)}")
    if not -MAX_TOTAL <= total <= MAX_TOTAL:  # also NaN; and no float() of a huge int (OverflowError)
        raise Rejected(INVALID_VALUE, f"total: expected a number between -{MAX_TOTAL} and {MAX_TOTAL}, "
                                      f"got {show(total)}")
    return [Event(event_id=event_id, kind="pos", source=msg.source, ts=ts,
                  received_at=msg.received_at, customer=customer, data={"items": items, "total": total})]
