"""A product's QR landing page, `/q/<touchpoint token>`, and what a shopper can do there: save it to their
wishlist, order it for home delivery or pickup elsewhere, ask an associate.

The phone is not authenticated: it is known only through a signed "phone" token (a kiosk handoff, or a signed
link `?c=<token>` from the shop's emails), kept in a cookie. Each form carries a signed, short-lived token bound
to the page's code and the phone's cookie (a cross-site form cannot forge it: it is an HMAC with the store's QR
key), and a POST a browser says came from another site is refused. The token's id also makes a double submit (a reload, a
second tap) one event. Actions become events: `shopper` wishlist_add / order_request through the outbox (the
central applies them), `kiosk` assist through the pipeline like a kiosk's, so the staff feed hears it.
Server-rendered and script-free: the page works on any phone, and bad input gets a page saying what to fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, request
from flask_babel import gettext as _

from edge.domain.catalogue import Product
from edge.domain.offers import offer_for
from edge.model import Event, Message
from edge.qr import QrError, Signer, Token
from edge.ratelimit import RateLimiter
from edge.web.auth import client_ip
from edge.web.i18n import page_lang
from edge.web.ports import Edge

FORM_TTL_S = 2 * 3600
# Form posts per client: a twentieth of [limits] public_rate_per_s (default 0.1/s: one per 10 s) after a burst of
# half public_burst (default 5), on top of the /q/ limit every request meets.
ACTIONS_RATE_SHARE = 20
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,100}\.[^@\s]{2,24}$")
PHONE_RE = re.compile(r"^\+?[0-9 ().-]{6,24}$")
MAX_QTY = 5
LANDING_SOURCE = "landing"  # the device id of phones' actions (kiosk assist events, shopper events)

Page = Callable[..., Response]


@dataclass(frozen=True)
class Phone:
    """Who the phone is: the customer id from its signed cookie (None: anonymous) and the cookie itself."""

    customer: str | None
    cookie: str


def image_url(image: str | None) -> str | None:
    """Where the page loads a product's picture: a SHA-256 is an asset the edge caches (`/assets/<sha256>`);
    a path on the edge is used as it is; anything else (a URL elsewhere) is not shown (no third-party loads)."""
    if not image:
        return None
    if SHA256_RE.match(image):
        return f"/assets/{image}"
    if image.startswith("/") and not image.startswith("//") and len(image) <= 500 and "\\" not in image:
        return image
    return None


def _binding(page_token: str, cookie: str) -> str:
    return hashlib.sha256(f"{page_token}|{cookie}".encode()).hexdigest()[:32]


def form_token(signer: Signer, page_token: str, phone: Phone) -> str:
    """A form's anti-forgery token: signed, expiring, bound to this page's code and this phone's cookie."""
    return signer.mint("phone", "f:" + _binding(page_token, phone.cookie), FORM_TTL_S)


def check_form_token(signer: Signer, raw: str, page_token: str, phone: Phone) -> Token | None:
    """The form token when it is ours, fresh and made for this page and phone; else None."""
    try:
        tok = signer.verify(raw)
    except QrError:
        return None
    if tok.kind != "phone" or tok.target != "f:" + _binding(page_token, phone.cookie):
        return None
    return tok


def same_origin() -> bool:
    """Not a post from another site: browsers say where a form came from in `Sec-Fetch-Site`, else in `Origin`
    (which is "null" under the page's no-referrer policy, so only a real other origin counts). Without
    either (an old browser), the form token alone, bound to this phone, protects the post."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.host
    return True


def product_view(edge: Edge, p: Product, lang: str) -> dict[str, Any]:
    """What the page shows of a product: name, price, picture, sizes and where they are, the offer."""
    cfg = edge.cfg
    zones = {z.id: z.name or z.id for z in cfg.zones}
    variants = [{"sku": v.sku, "label": v.label, "here": v.available is not False} for v in p.variants]
    here = p.here
    now = time.time()
    rules, content, playing = edge.campaigns.for_offers(now)  # store's first: on a tie its own rule wins
    contents = {c.id: c for c in cfg.content} | {k: v for k, v in content.items() if cfg.content_item(k) is None}
    offer = offer_for(cfg, p.sku, p.zone, lang, rules=[*cfg.rules, *rules], contents=contents, playing=playing,
                      now=now)
    return {"sku": p.sku, "name": p.name_in(lang, cfg.store.language), "price": p.price, "currency": p.currency,
            "image": image_url(p.image), "here": here, "zone": zones.get(p.zone or "", p.zone),
            "variants": variants, "nearby": [{"store": n.store, "name": n.name} for n in p.nearby if n.available],
            "orderable": not here or any(not v["here"] for v in variants), "offer": offer}


def add_routes(bp: Blueprint, edge: Edge, page: Page, phone: Callable[[], Phone],
               set_phone: Callable[[Response, str], None]) -> Callable[..., Response]:
    """The product page's form routes on the landing blueprint; returns the GET view for landing.py."""
    cfg = edge.cfg
    signer = edge.signer
    limiter = RateLimiter(cfg.limits.public_rate_per_s / ACTIONS_RATE_SHARE, max(1, cfg.limits.public_burst // 2))

    def bad(status: int, title: str, message: str, reason: str) -> Response:
        edge.metrics.inc("instore_edge_landing_refused_total", reason=reason)
        return page("landing_error.html", status, title=title, message=message, reason=reason)

    def show(token: str, p: Product, target: str, *, shopper: Any = None) -> Response:
        """GET: the product page; `?c=<signed link>` first makes the phone known, then drops it from the URL."""
        link = request.args.get("c")
        if link is not None:
            try:
                tok = signer.verify(link)
            except QrError:
                tok = None
            if tok is None or tok.kind != "phone" or not tok.target.startswith("c:"):
                return bad(403, _("This link is not valid"),
                           _("Open the link from our email again, or ask a member of staff."), "bad_link")
            resp = redirect(f"/q/{token}", code=303)
            set_phone(resp, tok.target[2:])
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Referrer-Policy"] = "no-referrer"
            return resp
        me = phone()
        view = product_view(edge, p, page_lang())
        wished = bool(shopper and p.sku in getattr(shopper, "wishlist", ())) or request.args.get("done") == "wishlist"
        done = request.args.get("done")
        order = request.args.get("order", "")
        return page("landing_product.html", p=view, target=target, token=token, known=me.customer is not None,
                    shopper=shopper, wished=wished, csrf=form_token(signer, token, me),
                    done=done if done in ("wishlist", "order", "assist") else None,
                    order_id=order if re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", order) else "")

    def action(token: str) -> tuple[Product, Token, Phone] | Response:
        """Checks every form post shares: the rate, the origin, the page's code, the form token."""
        wait = limiter.wait(client_ip())
        if wait > 0:
            resp = page("landing_slow_down.html", 429, retry_after=RateLimiter.retry_after(wait))
            resp.headers["Retry-After"] = str(RateLimiter.retry_after(wait))
            return resp
        if not same_origin():
            return bad(403, _("Please use the page itself"),
                       _("This form can only be sent from the store's page. Scan the code again."), "cross_origin")
        try:
            tok = signer.verify(token)
        except QrError:
            return bad(400, _("This code cannot be read"),
                       _("The link is incomplete or damaged. Scan the code again, or ask a member of staff."),
                       "bad_code")
        p = edge.catalogue.get(tok.target) if tok.kind == "touchpoint" else None
        if p is None:
            return bad(404, _("Product not found"),
                       _("This product is not in the store's catalogue any more. Please ask a member of staff."),
                       "unknown_product")
        me = phone()
        form = check_form_token(signer, request.form.get("csrf", ""), token, me)
        if form is None:
            return bad(403, _("This page has expired"),
                       _("Go back, reload the page and try again."), "bad_form")
        return p, form, me

    def record(kind: str, type_: str, customer: str | None, zone: str | None, event_id: str,
               data: dict[str, Any]) -> bool | Response:
        now = time.time()
        event = Event(event_id=event_id, kind=kind, source=LANDING_SOURCE, ts=now, received_at=now, zone=zone,
                      customer=customer, type=type_, data=data)
        try:
            return edge.record_event(event)
        except (TimeoutError, RuntimeError):
            return page("landing_error.html", 503, title=_("Please try again"),
                        message=_("The store system is busy. Reload this page in a moment."), reason="busy")

    def done(token: str, what: str, **extra: str) -> Response:
        query = "&".join(f"{k}={v}" for k, v in {"done": what, **extra}.items())
        resp = redirect(f"/q/{token}?{query}", code=303)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @bp.post("/q/<token>/wishlist")
    def wishlist(token: str):
        checked = action(token)
        if isinstance(checked, Response):
            return checked
        p, form, me = checked
        if me.customer is None:
            return bad(403, _("We do not know this phone yet"),
                       _("Continue from a kiosk after signing in, or open the link in our email, to save to your "
                         "wishlist."), "unknown_phone")
        out = record("shopper", "wishlist_add", me.customer, p.zone, f"q:wish:{form.token_id}", {"sku": p.sku})
        return out if isinstance(out, Response) else done(token, "wishlist")

    @bp.post("/q/<token>/order")
    def order(token: str):
        checked = action(token)
        if isinstance(checked, Response):
            return checked
        p, form, me = checked
        view = product_view(edge, p, page_lang())
        f = request.form
        item = f.get("item") or p.sku
        choices = {v["sku"] for v in view["variants"]} | ({p.sku} if not view["variants"] else set())
        if item not in choices:
            return bad(400, _("Choose a size"), _("Pick one of the sizes listed on the page."), "bad_item")
        try:
            qty = int(f.get("qty") or "1")
        except ValueError:
            qty = 0
        if not 1 <= qty <= MAX_QTY:
            return bad(400, _("Check the quantity"), _("Order between 1 and %(max)d pieces.", max=MAX_QTY), "bad_qty")
        fulfilment = f.get("fulfilment")
        data: dict[str, Any] = {}
        if fulfilment == "pickup":
            stores = {n["store"] for n in view["nearby"]}
            pickup = f.get("pickup_store", "")
            if pickup not in stores:
                return bad(400, _("Choose a store"), _("Pick one of the stores listed on the page for pickup."),
                           "bad_store")
            data["pickup_store"] = pickup
        elif fulfilment != "home":
            return bad(400, _("Choose how to receive it"),
                       _("Pick home delivery or pickup in another store."), "bad_fulfilment")
        contact = (f.get("contact") or "").strip()
        if contact and not (len(contact) <= 120 and (EMAIL_RE.match(contact) or PHONE_RE.match(contact))):
            return bad(400, _("Check your email or phone number"),
                       _("Write an email address (name@example.com) or a phone number (+39 02 1234 5678)."),
                       "bad_contact")
        if me.customer is None and not contact:
            return bad(400, _("How do we reach you?"),
                       _("Write an email address or a phone number, so we can tell you when your order is on its "
                         "way."), "no_contact")
        order_id = f"{cfg.store.id}-Q{form.token_id[:16].upper()}"  # store + 64 bits of the form's own MAC
        data = {"order_id": order_id, "items": [{"sku": item, "qty": qty}], "fulfilment": fulfilment, **data}
        if contact:  # an object, as the central's order_request expects: {"email"} or {"phone"}
            data["contact"] = {"email": contact} if EMAIL_RE.match(contact) else {"phone": contact}
        out = record("shopper", "order_request", me.customer, p.zone, f"q:order:{form.token_id}", data)
        return out if isinstance(out, Response) else done(token, "order", order=order_id)

    @bp.post("/q/<token>/assist")
    def assist(token: str):
        checked = action(token)
        if isinstance(checked, Response):
            return checked
        p, form, me = checked
        now = time.time()
        body: dict[str, Any] = {"id": f"q-assist-{form.token_id}", "ts": int(now * 1000), "type": "assist",
                                "session": f"phone-{form.token_id[:12]}", "item": p.sku,
                                "touchpoint": p.sku, "via": "qr"}
        if p.zone:
            body["zone"] = p.zone
        if me.customer:
            body["customer"] = me.customer
        edge.submit(Message(f"{cfg.prefix}/kiosk/{LANDING_SOURCE}/event", json.dumps(body).encode(), 1, 0, now,
                            done=lambda: None))
        return done(token, "assist")

    return show


def new_phone_cookie(signer: Signer, customer: str, ttl_s: int) -> str:
    """The signed cookie that makes a phone known as `customer` (a handoff, a signed link)."""
    return signer.mint("phone", f"c:{customer}", ttl_s)

