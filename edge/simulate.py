"""Shopper simulator: publishes realistic journeys to the store's broker, as the store's devices would.

A journey is one shopper's visit: their phone's beacon is heard at the entrance, then in a few zones
(noisy RSSI from the zone's gateway, now and then a weak sighting from a neighbouring gateway), with
stops at the shop window, a kiosk, a QR scanner and the till on the way; leaving is silence, since
gateways say nothing when someone goes. Gateways batch what they hear and publish about once a second.

Everything random comes from one seed, so a seed replays the same journeys (only timestamps and
receipt numbers differ between runs). `Journey` and `Crowd` are plain generators of timed `Step`s and
need no broker; `Simulator` replays them on the wall clock over MQTT (QoS 1, paho 2.x) and never has
more than `window` messages unacknowledged, well below paho's 65,535 message ids.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.config import Config
from edge.model import EdgeError

log = logging.getLogger(__name__)

# Every shopper's phone runs the store app, which advertises an iBeacon with this UUID, major 1 and the
# shopper number as minor. Shoppers logged in to the app are "known": it advertises their app id instead.
SHOPPER_UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
SHOPPER_MAJOR = 1
TILL = "till-1"
DEFAULT_WINDOW = "window-1"
MAX_SIGHTINGS_PER_BATCH = 250
SIGHTING_BYTES = 200  # a generous size of one sighting in JSON, to keep batches under limits.max_payload_bytes

# Zone roles, recognised by words in a zone's id or name; every other zone is shop floor.
_ROLE_WORDS = {
    "entrance": ("entrance", "entry", "door", "front", "lobby"),
    "fitting": ("fitting", "changing"),
    "checkout": ("checkout", "till", "cash", "pos"),
    "pickup": ("pickup", "pick-up", "collect", "click"),
}


class SimulatorError(EdgeError):
    """The simulator cannot run with this config or broker."""


@dataclass(frozen=True, slots=True)
class Step:
    """One thing to publish, `at` seconds after the simulation started.

    A sighting has `gateway` set and is batched with that gateway's other sightings; anything else is
    published on its own. The payload has no "ts": it is stamped when the step is sent.
    """

    at: float
    topic: str
    payload: dict[str, Any]
    gateway: str | None = None
    kind: str = "beacon"


@dataclass(frozen=True)
class StoreLayout:
    """What the simulator needs from the config: zones by role, their gateways, kiosks and neighbours."""

    prefix: str
    entrance: str
    floor: tuple[str, ...]
    fitting: str | None
    checkout: str | None
    pickup: str | None
    gateways: dict[str, tuple[str, ...]]
    neighbours: dict[str, tuple[str, ...]]
    kiosks: dict[str, tuple[str, ...]]
    windows: tuple[str, ...]
    staff: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_config(cls, cfg: Config) -> StoreLayout:
        gateways: dict[str, list[str]] = {}
        for g in cfg.gateways:
            # Foreign formats (ESPresense, Theengs) publish on their own topics: only native ones are simulated.
            if g.format == "native":
                gateways.setdefault(g.zone, []).append(g.id)
        zones = [z for z in cfg.zones if z.id in gateways]
        if not zones:
            raise SimulatorError("no zone has a native gateway: add [[gateways]] with format = \"native\" "
                                 "and a zone, so there is somewhere to hear shoppers")

        def role_of(zone_id: str, name: str) -> str | None:
            text = f"{zone_id} {name}".lower()
            return next((role for role, words in _ROLE_WORDS.items() if any(w in text for w in words)), None)

        roles: dict[str, str] = {}
        for z in zones:
            role = role_of(z.id, z.name)
            if role and role not in roles:
                roles[role] = z.id
        entrance = roles.get("entrance", zones[0].id)
        special = {entrance, *roles.values()}
        floor = tuple(z.id for z in zones if z.id not in special) or (entrance,)
        order = [z.id for z in zones]
        neighbours = {z: tuple(order[j] for j in (i - 1, i + 1) if 0 <= j < len(order))
                      for i, z in enumerate(order)}
        kiosks: dict[str, list[str]] = {}
        for k in cfg.kiosks:
            kiosks.setdefault(k.zone, []).append(k.id)
        windows = tuple(s.id for s in cfg.screens if "window" in s.id.lower()) or (DEFAULT_WINDOW,)
        staff = tuple(b for b in (_ibeacon_from_key(c.key) for c in cfg.beacons if c.kind == "staff") if b)
        return cls(
            prefix=cfg.prefix, entrance=entrance, floor=floor, fitting=roles.get("fitting"),
            checkout=roles.get("checkout"), pickup=roles.get("pickup"),
            gateways={z: tuple(ids) for z, ids in gateways.items()}, neighbours=neighbours,
            kiosks={z: tuple(ids) for z, ids in kiosks.items()}, windows=windows, staff=staff,
        )


def _ibeacon_from_key(key: str) -> dict[str, Any] | None:
    """A beacon object from a config key like ibeacon:<uuid>:<major>:<minor>; None for other kinds."""
    parts = key.split(":")
    if len(parts) != 4 or parts[0] != "ibeacon" or not (parts[2].isdigit() and parts[3].isdigit()):
        return None
    return {"type": "ibeacon", "uuid": parts[1], "major": int(parts[2]), "minor": int(parts[3])}


def catalog(zone: str, size: int = 6) -> list[tuple[str, float]]:
    """The SKUs on sale in a zone, with prices: stable across runs (crc32, not Python's salted hash)."""
    stem = "".join(c for c in zone.upper() if c.isalnum())[:4] or "ITEM"
    items = []
    for i in range(size):
        sku = f"{stem}-{101 + i}"
        price = 9.9 + (zlib.crc32(sku.encode()) % 140) + 0.09  # 9.99 .. 148.99
        items.append((sku, round(price, 2)))
    return items


def customer_id(number: int) -> str:
    """The demo customer ids: C-0001 ... (the central demo store is seeded with the same ones)."""
    return f"C-{number:04d}"


@dataclass
class Journey:
    """One shopper's visit as a time-ordered stream of Steps (a generator: iterate it once).

    `start` is when the shopper walks in, in seconds of simulation time; `speed` > 1 compresses every
    duration (for tests). `customer` is set for known shoppers (logged in to the app).
    """

    number: int
    layout: StoreLayout
    rng: random.Random
    start: float = 0.0
    rate: float = 2.0
    speed: float = 1.0
    customer: int | None = None
    neighbour_p: float = 0.04
    zones: list[str] = field(default_factory=list)
    end: float = 0.0

    @property
    def known(self) -> bool:
        return self.customer is not None

    @property
    def beacon(self) -> dict[str, Any]:
        if self.customer is not None:
            return {"type": "device", "id": f"app-{self.customer}"}
        minor = (self.number - 1) % 65535 + 1
        return {"type": "ibeacon", "uuid": SHOPPER_UUID, "major": SHOPPER_MAJOR, "minor": minor}

    def __iter__(self) -> Iterator[Step]:
        rng, lay = self.rng, self.layout
        t = self.start
        cart: list[tuple[str, float]] = []
        carry: list[Step] = []
        # The route: entrance, one to three floor zones, maybe the fitting rooms, maybe the till, maybe pickup.
        floor = rng.sample(lay.floor, k=rng.randint(1, min(3, len(lay.floor))))
        route: list[tuple[str, float]] = [(lay.entrance, rng.uniform(4, 10))]
        route += [(z, rng.uniform(15, 60)) for z in floor]
        if lay.fitting and rng.random() < 0.3:
            route.append((lay.fitting, rng.uniform(20, 60)))
            route.append((rng.choice(floor), rng.uniform(8, 20)))
        buys = rng.random() < 0.65
        if buys and lay.checkout:
            route.append((lay.checkout, rng.uniform(10, 30)))
        collects = self.known and lay.pickup is not None and rng.random() < 0.3
        if collects:
            route.append((lay.pickup, rng.uniform(10, 25)))  # type: ignore[arg-type]
        till_zone = lay.checkout or route[-1][0]

        for index, (zone, seconds) in enumerate(route):
            seconds /= self.speed
            self.zones.append(zone)
            actions: list[Step] = []
            if zone == lay.entrance and index == 0 and rng.random() < 0.3:
                actions += self._window(t + rng.uniform(0.2, 0.5) * seconds)
            if zone in lay.floor and zone in lay.kiosks and rng.random() < (0.7 if self.known else 0.25):
                actions += self._kiosk(rng.choice(lay.kiosks[zone]), zone, t + rng.uniform(0.1, 0.3) * seconds,
                                       seconds * 0.6, cart)
            elif zone in lay.floor and rng.random() < 0.5:
                cart += rng.sample(catalog(zone), k=1)  # picked from a rail, no screen involved
            if buys and zone == till_zone and (index == len(route) - 1 or lay.checkout == zone):
                actions += self._pay(zone, t + 0.85 * seconds, cart)
                buys = False
            if collects and zone == lay.pickup:
                code = f"order:O-{self.customer:04d}-{rng.randint(1000, 9999)}"
                actions.append(self._touch(t + 0.5 * seconds, f"qr/qr-{zone}", {"code": code}, "qr"))
            # A touchpoint session may outlast the visit (the shopper walks on while the window still has
            # their session): carry such steps over, so the stream stays in time order.
            steps = sorted(self._sightings(zone, t, seconds) + actions + carry, key=lambda s: s.at)
            t += seconds
            carry = [s for s in steps if s.at >= t]
            yield from (s for s in steps if s.at < t)
            t += rng.uniform(0.5, 2.0) / self.speed  # walking between zones: out of range
        yield from carry
        self.end = max([t, *(s.at for s in carry)])

    # --- what a shopper does -------------------------------------------------------------------------
    def _sightings(self, zone: str, t0: float, seconds: float) -> list[Step]:
        """The phone advertising about `rate` times a second, heard by the zone's gateway (and a neighbour)."""
        rng, lay = self.rng, self.layout
        level = rng.uniform(-74, -56)  # how close to the gateway this shopper stands
        out = []
        t = t0 + rng.uniform(0, 1 / self.rate)
        while t < t0 + seconds:
            gateway = rng.choice(lay.gateways[zone])
            rssi = int(max(-100, min(-30, round(rng.gauss(level, 4)))))
            out.append(self._sighting(t, gateway, rssi))
            if rng.random() < self.neighbour_p and lay.neighbours[zone]:
                other = rng.choice(lay.gateways[rng.choice(lay.neighbours[zone])])
                out.append(self._sighting(t + rng.uniform(0, 0.05), other, rng.randint(-95, -84)))
            t += rng.uniform(0.5, 1.5) / self.rate
        return out

    def _sighting(self, t: float, gateway: str, rssi: int) -> Step:
        return Step(t, f"{self.layout.prefix}/beacon/{gateway}",
                    {"beacon": self.beacon, "rssi": rssi, "tx_power": -59}, gateway=gateway)

    def _touch(self, t: float, topic: str, payload: dict[str, Any], kind: str) -> Step:
        return Step(t, f"{self.layout.prefix}/{topic}", payload, kind=kind)

    def _session(self, where: str) -> str:
        return f"{where}-{self.number}-{self.rng.randrange(16**6):06x}"

    def _window(self, t: float) -> list[Step]:
        """Touch the shop window, browse a few items, maybe pick one and send it to the phone."""
        rng = self.rng
        window = rng.choice(self.layout.windows)
        session = self._session("w")
        items = [sku for sku, _ in catalog(rng.choice(self.layout.floor))]
        steps = [self._touch(t, f"window/{window}", {"type": "touch", "session": session}, "window")]
        for _ in range(rng.randint(1, 3)):
            t += rng.uniform(1, 3) / self.speed
            steps.append(self._touch(t, f"window/{window}",
                                     {"type": "browse", "session": session, "item": rng.choice(items)}, "window"))
        if rng.random() < 0.4:
            item = rng.choice(items)
            t += rng.uniform(1, 2) / self.speed
            steps.append(self._touch(t, f"window/{window}", {"type": "select", "session": session, "item": item},
                                     "window"))
            if rng.random() < 0.5:
                steps.append(self._touch(t + 1 / self.speed, f"window/{window}",
                                         {"type": "handoff", "session": session, "item": item}, "window"))
        return steps

    def _kiosk(self, kiosk: str, zone: str, t: float, budget: float, cart: list[tuple[str, float]]) -> list[Step]:
        """Identify (known shoppers; some others with a loyalty card), browse, add to cart, maybe hand off."""
        rng = self.rng
        topic = f"kiosk/{kiosk}/event"
        session = self._session("k")
        steps = []
        if self.customer is not None:
            steps.append(self._touch(t, topic, {"type": "identify", "customer": customer_id(self.customer),
                                                "session": session}, "kiosk"))
        elif rng.random() < 0.3:
            card = f"loyalty:LC-{self.number:06d}"
            steps.append(self._touch(t, topic, {"type": "identify", "identity": card, "session": session}, "kiosk"))
        end = t + budget
        items = catalog(zone)
        while True:
            t += rng.uniform(2, 6) / self.speed
            if t >= end:
                break
            sku, price = rng.choice(items)
            steps.append(self._touch(t, topic, {"type": "browse", "session": session, "item": sku}, "kiosk"))
            if rng.random() < 0.4:
                t += rng.uniform(1, 3) / self.speed
                steps.append(self._touch(t, topic, {"type": "add_to_cart", "session": session, "item": sku}, "kiosk"))
                cart.append((sku, price))
        if steps and rng.random() < 0.3:
            handoff = {"type": "handoff", "session": session, "to": rng.choice(["phone", "staff"])}
            steps.append(self._touch(min(t, end), topic, handoff, "kiosk"))
        return steps

    def _pay(self, zone: str, t: float, cart: list[tuple[str, float]]) -> list[Step]:
        """Pay at the till (maybe scanning a loyalty card first): the conversion."""
        rng = self.rng
        if not cart:
            cart.append(rng.choice(catalog(rng.choice(self.layout.floor))))
        steps = []
        if self.customer is None and rng.random() < 0.2:
            steps.append(self._touch(t - 2 / self.speed, f"qr/qr-{zone}",
                                     {"code": f"loyalty:LC-{self.number:06d}"}, "qr"))
        sale: dict[str, Any] = {"items": [sku for sku, _ in cart], "total": round(sum(p for _, p in cart), 2)}
        if self.customer is not None:
            sale["customer"] = customer_id(self.customer)
        steps.append(self._touch(t, f"pos/{TILL}", sale, "pos"))  # the receipt id is added when sent
        return steps


def staff_walk(layout: StoreLayout, beacon: dict[str, Any], rng: random.Random, speed: float = 1.0,
               start: float = 0.0) -> Iterator[Step]:
    """A staff badge walking the floor for ever: the edge must recognise and ignore it."""
    zones = list(layout.gateways)
    t = start
    while True:
        zone = rng.choice(zones)
        end = t + rng.uniform(30, 90) / speed
        while t < end:
            gateway = rng.choice(layout.gateways[zone])
            yield Step(t, f"{layout.prefix}/beacon/{gateway}",
                       {"beacon": beacon, "rssi": rng.randint(-80, -55)}, gateway=gateway)
            t += rng.uniform(0.8, 1.2) / speed


class Crowd:
    """About `shoppers` journeys at once: when one shopper leaves, another walks in a little later.

    Iterating yields every Step of every journey (and of the staff badges) in time order. With
    `max_journeys` the crowd ends once that many journeys have been walked to the end.
    """

    def __init__(self, layout: StoreLayout, *, shoppers: int = 20, rate: float = 2.0, seed: int | None = None,
                 speed: float = 1.0, known_share: float = 0.35, customers: int = 9,
                 max_journeys: int | None = None, staff: bool = True, first_known: int | None = None) -> None:
        if shoppers < 1 or rate <= 0 or speed <= 0:
            raise SimulatorError("shoppers must be at least 1, rate and speed above 0")
        self.layout = layout
        self.shoppers = shoppers
        self.rate = rate
        self.speed = speed
        self.known_share = known_share
        self.customers = customers
        self.max_journeys = max_journeys
        self.staff = staff
        self.rng = random.Random(seed)
        self.started: list[Journey] = []
        self.finished = 0
        self.in_store: set[int] = set()  # customer numbers of known shoppers now in the store
        # The customer number of the first shopper to walk in (the demo's: one with an order ready here, so
        # the staff app shows a pickup arrival in the demo's first minute whatever the draw).
        self.first_known = first_known

    def _new_journey(self, start: float) -> Journey:
        number = len(self.started) + 1
        rng = random.Random(self.rng.getrandbits(64))
        free = [n for n in range(1, self.customers + 1) if n not in self.in_store]
        customer = rng.choice(free) if free and rng.random() < self.known_share else None
        if number == 1 and self.first_known is not None:
            customer = self.first_known
        if customer is not None:
            self.in_store.add(customer)
        journey = Journey(number, self.layout, rng, start=start, rate=self.rate, speed=self.speed, customer=customer)
        self.started.append(journey)
        return journey

    def _can_start(self) -> bool:
        return self.max_journeys is None or len(self.started) < self.max_journeys

    def __iter__(self) -> Iterator[Step]:
        heap: list[tuple[float, int, Step, Iterator[Step], Journey | None]] = []
        order = itertools.count()
        walking = 0  # journeys in the heap (the rest are staff badges)

        def start_walk(it: Iterator[Step], journey: Journey | None) -> None:
            nonlocal walking
            step = next(it, None)
            if step is not None:
                heapq.heappush(heap, (step.at, next(order), step, it, journey))
                walking += journey is not None
            elif journey is not None:
                self.finished += 1
                if journey.customer is not None:
                    self.in_store.discard(journey.customer)
                if self._can_start():  # the next shopper walks in a little later
                    new = self._new_journey(journey.end + self.rng.uniform(1, 8) / self.speed)
                    start_walk(iter(new), new)

        t = 0.2 / self.speed
        # The first shoppers arrive over the first ~20 seconds, however many they are.
        spread = min(1.0, 10.0 / self.shoppers) / self.speed
        for _ in range(self.shoppers if self.max_journeys is None else min(self.shoppers, self.max_journeys)):
            journey = self._new_journey(t)
            start_walk(iter(journey), journey)
            t += self.rng.uniform(0.5, 3.0) * spread
        if self.staff:
            for beacon in self.layout.staff:
                start_walk(staff_walk(self.layout, beacon, random.Random(self.rng.getrandbits(64)), self.speed), None)
        while heap and walking:  # only staff left: every journey is over
            _, _, step, it, journey = heapq.heappop(heap)
            walking -= journey is not None
            yield step
            start_walk(it, journey)


class Simulator:
    """Replays a Crowd on the wall clock over MQTT: sightings batched per gateway, the rest one by one."""

    def __init__(self, cfg: Config, *, shoppers: int = 20, rate: float = 5.0, seed: int | None = None,
                 speed: float = 1.0, journeys: int | None = None, host: str | None = None, port: int | None = None,
                 window: int = 200, batch_interval_s: float = 1.0, staff: bool = True,
                 client_id: str | None = None, connect_timeout: float = 10.0, customers: int = 9,
                 first_known: int | None = None) -> None:
        self.cfg = cfg
        self.layout = StoreLayout.from_config(cfg)
        self.crowd = Crowd(self.layout, shoppers=shoppers, rate=rate, seed=seed, speed=speed,
                           max_journeys=journeys, staff=staff, customers=customers, first_known=first_known)
        self.batch_max = max(1, min(MAX_SIGHTINGS_PER_BATCH, cfg.limits.max_payload_bytes // SIGHTING_BYTES))
        self.host = host or cfg.mqtt.host
        self.port = port or cfg.mqtt.port
        self.window = window
        self.batch_interval_s = batch_interval_s
        self.connect_timeout = connect_timeout
        self.stats: Counter[str] = Counter()
        self.run_id = f"{int(time.time() * 1000) % 10**10:x}"  # receipt ids stay unique across runs
        self._receipts = itertools.count(1)
        self._cond = threading.Condition()
        self._sent = 0
        self._acked = 0
        self._connected = threading.Event()
        self._error: str | None = None
        m = cfg.mqtt
        v5 = m.protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"instore-sim-{cfg.store.id}-{random.randrange(16**6):06x}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
        )
        if m.username:
            self.client.username_pw_set(m.username, m.password)
        if m.tls_ca:
            import ssl

            self.client.tls_set(ca_certs=m.tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.max_inflight_messages_set(window)
        self.client.reconnect_delay_set(0.5, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # --- paho callbacks (network thread; they never take paho's locks, so they may take ours) ---
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            self._error = f"broker {self.host}:{self.port} refused the connection: {reason_code}"
            return
        self._error = None
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()

    # --- publishing ---
    def _publish(self, topic: str, payload: dict[str, Any], stop: threading.Event) -> None:
        """QoS 1, never more than `window` unacknowledged (waits for acks; gives up waiting on stop)."""
        with self._cond:
            while self._sent - self._acked >= self.window and not stop.is_set():
                self._cond.wait(0.2)
        # Not under our lock: paho calls on_publish holding its own lock, and publish() takes that lock too.
        self.client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1)
        with self._cond:
            self._sent += 1
        self.stats["messages"] += 1

    def _wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._acked < self._sent:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def connect(self, timeout: float | None = None) -> None:
        timeout = self.connect_timeout if timeout is None else timeout
        try:
            self.client.connect_async(self.host, self.port, keepalive=30)
            self.client.loop_start()
        except (OSError, ValueError) as exc:
            raise SimulatorError(f"cannot connect to the broker at {self.host}:{self.port}: {exc}") from None
        if not self._connected.wait(timeout):
            self.client.loop_stop()
            raise SimulatorError(self._error or f"no MQTT broker answered at {self.host}:{self.port} within "
                                 f"{timeout:.0f}s: start it, or check mqtt.host/mqtt.port")

    def run(self, duration_s: float = 0, stop_event: threading.Event | None = None) -> Counter[str]:
        """Publish until the crowd is done, `duration_s` passes, `stop_event` is set or Ctrl-C."""
        stop = stop_event or threading.Event()
        self.connect()
        start = time.monotonic()
        start_ms = time.time() * 1000
        buffers: dict[str, list[dict[str, Any]]] = {}
        # Each gateway publishes on its own second, like independent devices do.
        next_flush = {g: (zlib.crc32(g.encode()) % 1000) / 1000 * self.batch_interval_s
                      for ids in self.layout.gateways.values() for g in ids}

        def flush(now: float, force: bool = False) -> None:
            for gateway, due in next_flush.items():
                if due > now and not force:
                    continue
                next_flush[gateway] = due + self.batch_interval_s * max(1, int((now - due) / self.batch_interval_s) + 1)
                batch = buffers.pop(gateway, None)
                while batch:
                    chunk, batch = batch[:self.batch_max], batch[self.batch_max:]
                    self._publish(f"{self.layout.prefix}/beacon/{gateway}", {"sightings": chunk}, stop)
                    self.stats["batches"] += 1

        def over() -> bool:
            return stop.is_set() or bool(duration_s and time.monotonic() - start >= duration_s)

        try:
            for step in self.crowd:
                while not over():
                    now = time.monotonic() - start
                    flush(now)
                    if step.at <= now:
                        break
                    time.sleep(max(0.0, min(step.at - now, min(next_flush.values()) - now, 0.1)))
                if over():
                    break
                ts = int(start_ms + step.at * 1000)
                if step.gateway is not None:
                    buffers.setdefault(step.gateway, []).append({"ts": ts, **step.payload})
                    self.stats["sightings"] += 1
                    continue
                payload = {"ts": ts, **step.payload}
                if step.kind == "pos":
                    payload = {"id": f"R-{self.run_id}-{next(self._receipts):05d}", **payload}
                self._publish(step.topic, payload, stop)
                self.stats[step.kind] += 1
        except KeyboardInterrupt:
            pass
        try:
            flush(time.monotonic() - start, force=True)
            if not self._wait_acked(10.0):
                log.warning("simulator: %d messages not acknowledged by the broker", self._sent - self._acked)
        except KeyboardInterrupt:
            pass
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        self.stats["acked"] = self._acked
        self.stats["elapsed_ms"] = int((time.monotonic() - start) * 1000)
        return self.stats

    def summary(self) -> str:
        s = self.stats
        journeys = self.crowd.started
        known = sum(1 for j in journeys if j.known)
        return (f"simulator: {len(journeys)} shoppers ({known} known, {self.crowd.finished} left), "
                f"{s['sightings']:,} sightings in {s['batches']:,} gateway batches, {s['window']} window, "
                f"{s['kiosk']} kiosk, {s['qr']} qr, {s['pos']} pos messages; {s['acked']:,}/{s['messages']:,} "
                f"acked by {self.host}:{self.port} in {s['elapsed_ms'] / 1000:.1f}s")


def run_simulator(cfg: Config, shoppers: int = 20, rate: float = 5.0, duration_s: float = 0,
                  seed: int | None = None, stop_event: threading.Event | None = None,
                  port_override: int | None = None, *, speed: float = 1.0, journeys: int | None = None,
                  host_override: str | None = None, connect_timeout: float = 10.0,
                  out: TextIO | None = None, first_known: int | None = None) -> int:
    """`instore-edge simulate`: publish journeys until done/stopped; print a one-line summary; exit code."""
    out = out or sys.stdout
    try:
        sim = Simulator(cfg, shoppers=shoppers, rate=rate, seed=seed, speed=speed, journeys=journeys,
                        host=host_override, port=port_override, connect_timeout=connect_timeout,
                        first_known=first_known)
        sim.run(duration_s, stop_event)
    except SimulatorError as exc:
        print(f"instore-edge simulate: {exc}", file=sys.stderr)
        return 1
    print(sim.summary(), file=out, flush=True)
    return 0
