"""The demo data set: a small catalogue and a few hundred shoppers, generated from a seed, and two centrally
managed campaigns (one running, one starting later today) with a poster image and the catalogue's prices.

Same seed, same shoppers: shopper n is customer `C-{n:04d}` and carries the identity `device:app-{n}`
(the shopper simulator plays shoppers 1..300 with that app id), most also a `loyalty:<card>` identity.
The kiosk shows products from `CATALOGUE`; wishlists, carts and ready orders only use its SKUs.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sync.protocol import Profile

DEMO_SEED = 20240917
DEMO_SHOPPERS = 300
# The reference time ready orders are placed around when no `now` is given: keeps the output identical.
REFERENCE_NOW = datetime(2025, 3, 14, 10, 0, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Product:
    """A catalogue entry: `zone` is the store area where it hangs (a hint for kiosks and signage)."""

    sku: str
    name: str
    price: float
    category: str
    zone: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CATALOGUE: tuple[Product, ...] = (
    Product("SNK-001", "Corsa Runner sneakers", 119.0, "sneakers", "shoes"),
    Product("SNK-002", "Retro court sneakers, white", 95.0, "sneakers", "shoes"),
    Product("SNK-003", "Trail knit sneakers", 129.0, "sneakers", "shoes"),
    Product("SNK-004", "Canvas low-tops", 59.0, "sneakers", "shoes"),
    Product("OUT-001", "Dolomiti waterproof jacket", 189.0, "outdoor", "menswear"),
    Product("OUT-002", "Lightweight down vest", 89.0, "outdoor", "womenswear"),
    Product("OUT-003", "Hiking boots, suede", 159.0, "outdoor", "shoes"),
    Product("OUT-004", "Fleece half-zip", 69.0, "outdoor", "menswear"),
    Product("OUT-005", "Packable rain shell", 109.0, "outdoor", "womenswear"),
    Product("FRM-001", "Wool blazer, navy", 249.0, "formal", "menswear"),
    Product("FRM-002", "Silk blouse, ivory", 129.0, "formal", "womenswear"),
    Product("FRM-003", "Leather Oxford shoes", 179.0, "formal", "shoes"),
    Product("FRM-004", "Pleated midi skirt", 99.0, "formal", "womenswear"),
    Product("FRM-005", "Slim poplin shirt", 69.0, "formal", "menswear"),
    Product("KID-001", "Kids rain boots", 35.0, "kids", "kids"),
    Product("KID-002", "Kids hoodie, dino print", 29.0, "kids", "kids"),
    Product("KID-003", "Kids light-up sneakers", 45.0, "kids", "kids"),
    Product("KID-004", "Kids puffer jacket", 59.0, "kids", "kids"),
    Product("DNM-001", "Straight-leg jeans, mid blue", 89.0, "denim", "menswear"),
    Product("DNM-002", "High-rise wide jeans", 95.0, "denim", "womenswear"),
    Product("DNM-003", "Denim trucker jacket", 110.0, "denim", "womenswear"),
    Product("ACC-001", "Leather tote bag", 139.0, "accessories", "accessories"),
    Product("ACC-002", "Merino scarf", 45.0, "accessories", "accessories"),
    Product("ACC-003", "Canvas backpack", 79.0, "accessories", "accessories"),
    Product("ACC-004", "Reversible leather belt", 49.0, "accessories", "accessories"),
    Product("ATH-001", "Seamless leggings", 55.0, "athleisure", "womenswear"),
    Product("ATH-002", "Training joggers", 60.0, "athleisure", "menswear"),
    Product("ATH-003", "Running tee, recycled", 35.0, "athleisure", "menswear"),
)
CATALOGUE_BY_SKU: dict[str, Product] = {p.sku: p for p in CATALOGUE}
SEGMENTS = ("sneakers", "outdoor", "formal", "kids", "denim", "accessories", "athleisure")

FIRST_NAMES = (
    "Giulia", "Marco", "Sofia", "Luca", "Chiara", "Alessandro", "Francesca", "Matteo", "Aurora", "Lorenzo",
    "Martina", "Andrea", "Elena", "Davide", "Sara", "Giorgio", "Valentina", "Tommaso", "Beatrice", "Riccardo",
    "Ginevra", "Federico", "Alice", "Pietro", "Noemi", "Emma", "Leonardo", "Greta", "Samuele", "Anna",
    "Ilaria", "Dario", "Bianca", "Gabriele", "Camilla", "Nicolò", "Amira", "Chen", "Fatou", "Olga", "Rahul",
    "Yuki", "Mateo", "Léa", "Jonas", "Ayesha", "Kofi", "Inès", "Nikos", "Zofia", "Priya", "Omar", "Mei",
)
TIER_WEIGHTS = (("bronze", 45), ("silver", 30), ("gold", 18), ("vip", 7))
LANGUAGES = (("it", 70), ("en", 20), ("de", 5), ("fr", 5))
SIZES = ("XS", "S", "M", "L", "XL")


def _weighted(rng: random.Random, options: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def _skus_for(rng: random.Random, segments: list[str], count: int) -> list[str]:
    """Mostly products from the shopper's segments, sometimes anything."""
    liked = [p.sku for p in CATALOGUE if p.category in segments] or [p.sku for p in CATALOGUE]
    picks: list[str] = []
    for _ in range(count * 3):
        if len(picks) == count:
            break
        pool = liked if rng.random() < 0.8 else [p.sku for p in CATALOGUE]
        sku = rng.choice(pool)
        if sku not in picks:
            picks.append(sku)
    return picks


def generate_profiles(count: int = DEMO_SHOPPERS, seed: int = DEMO_SEED,
                      now: datetime | None = None) -> list[Profile]:
    """`count` shoppers, C-0001.., the same ones for the same seed (and `now`, which dates ready orders)."""
    rng = random.Random(seed)
    now = now or REFERENCE_NOW
    profiles: list[Profile] = []
    cards: set[str] = set()
    for n in range(1, count + 1):
        segments = rng.sample(SEGMENTS, rng.choice((1, 1, 2, 2, 3)))
        personalization = rng.random() < 0.7
        marketing = rng.random() < (0.55 if personalization else 0.1)
        identities = [f"device:app-{n}"]
        if rng.random() < 0.65:
            card = f"{rng.randrange(10**9, 10**10)}"
            while card in cards:
                card = f"{rng.randrange(10**9, 10**10)}"
            cards.add(card)
            identities.append(f"loyalty:{card}")
        preferences: dict[str, Any] = {"language": _weighted(rng, LANGUAGES), "size": rng.choice(SIZES)}
        if "sneakers" in segments or "outdoor" in segments or rng.random() < 0.3:
            preferences["shoe_size"] = rng.choice((36, 37, 38, 39, 40, 41, 42, 43, 44, 45))
        if rng.random() < 0.4:
            preferences["preferred_zone"] = rng.choice(("womenswear", "menswear", "shoes", "kids", "accessories"))
        wishlist = _skus_for(rng, segments, rng.choice((0, 1, 2, 2, 3, 4)))
        cart = _skus_for(rng, segments, rng.choice((1, 2))) if rng.random() < 0.3 else []
        orders = []
        if rng.random() < 0.08:
            ready = now - timedelta(minutes=rng.randrange(10, 60 * 48))
            orders.append({"order_id": f"ORD-{500000 + n * 37 + rng.randrange(30)}",
                           "items": _skus_for(rng, segments, rng.choice((1, 2, 3))),
                           "ready_at": ready.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                           "pickup_bay": f"B{rng.randrange(1, 7)}"})
        profiles.append(Profile(
            customer_id=f"C-{n:04d}", first_name=rng.choice(FIRST_NAMES), segments=segments,
            tier=_weighted(rng, TIER_WEIGHTS),
            consents={"personalization": personalization, "marketing": marketing},
            preferences=preferences, wishlist=wishlist, cart=cart, orders_ready=orders, identities=identities,
            version=0))
    return profiles


def load_demo_data(store: Any, *, count: int = DEMO_SHOPPERS, seed: int = DEMO_SEED,
                   now: datetime | None = None) -> int:
    """Fill an empty central store (a storage.Storage) with the demo shoppers, and with the demo products and
    campaigns when it has no campaign yet; returns how many shoppers were added."""
    if not store.campaign_list():
        load_demo_content(store, now=datetime.now(timezone.utc))
    if not store.is_empty():
        return 0
    profiles = generate_profiles(count, seed, now)
    store.upsert_profiles([{k: v for k, v in prof.items() if k != "version"} for prof in profiles])
    return len(profiles)


def poster_png(width: int = 480, height: int = 270) -> bytes:
    """The demo campaigns' poster: an autumn-coloured gradient as a PNG, made here (no binary in the repository)."""
    rows = b"".join(b"\0" + bytes(v for x in range(width) for v in (150 + x * 100 // width, 60 + y * 90 // height, 30))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def demo_campaigns(poster: str, now: datetime) -> list[dict[str, Any]]:
    """Two campaigns for every store: "autumn-coats" running from an hour ago (the demo's shoppers walking
    into womenswear or menswear see it within the first minute), "evening-denim" starting two hours from now."""
    def at(delta: timedelta) -> str:
        return (now + delta).replace(microsecond=0).isoformat()

    def rule(rid: str, zone: str, content_id: str) -> dict[str, Any]:
        return {"id": rid, "priority": 15, "ttl_s": 8.0, "when": {"zone": zone, "event": "zone_enter"},
                "show": {"content_id": content_id}}

    return [
        {"id": "autumn-coats", "name": "Autumn coats", "targets": {"stores": ["*"]}, "priority": 10,
         "schedule": {"start": at(timedelta(hours=-1)), "end": at(timedelta(days=30))},
         "content": [{"id": "autumn-coats", "template": "message", "image": poster, "duration_s": 8.0,
                      "title": "Cappotti d'autunno: -10% per i soci gold",
                      "body": "Lana, piumino e impermeabili: li trovi in reparto.",
                      "i18n": {"en": {"title": "Autumn coats: 10% off for gold members",
                                      "body": "Wool, down and rain coats: find them on the floor."}}}],
         "rules": [rule("autumn-coats-womenswear", "womenswear", "autumn-coats"),
                   rule("autumn-coats-menswear", "menswear", "autumn-coats")]},
        {"id": "evening-denim", "name": "Denim evening", "targets": {"stores": ["*"]}, "priority": 10,
         "schedule": {"start": at(timedelta(hours=2)), "end": at(timedelta(hours=5))},
         "content": [{"id": "evening-denim", "template": "message", "duration_s": 8.0,
                      "title": "Serata denim: 2 jeans a 120 €", "body": "Solo stasera, in reparto.",
                      "i18n": {"en": {"title": "Denim evening: 2 jeans for €120",
                                      "body": "Tonight only, on the floor."}}}],
         "rules": [rule("evening-denim-entrance", "entrance", "evening-denim")]},
    ]


def load_demo_content(store: Any, *, now: datetime) -> int:
    """The catalogue with prices, the poster asset and the two demo campaigns, published to every store;
    returns how many campaigns were added."""
    from sync.central.content import validate_campaign, validate_product

    poster = poster_png()
    sha = hashlib.sha256(poster).hexdigest()
    store.put_asset(sha, "image/png", poster)
    for prod in CATALOGUE:
        body: dict[str, Any] = {"name": prod.name, "price": prod.price, "currency": "EUR", "zone": prod.zone}
        if prod.category == "outdoor":
            body["image"] = sha
        store.put_product(prod.sku, validate_product(body))
    campaigns = demo_campaigns(sha, now)
    for campaign in campaigns:
        cid = campaign.pop("id")
        store.put_campaign(cid, validate_campaign(campaign))
        store.publish_campaign(cid, None)
    return len(campaigns)
