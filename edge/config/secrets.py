"""What makes a value unusable as a store's secret: too short, a placeholder, a value published with
instore-edge (the example and demo configs), or one an attacker would guess first.

edge.config applies `weakness` to every secret key (`SECRET_KEYS`), so `check-config` and `run` refuse
such values unless `[store] demo = true`. Messages never contain the value: it may be a real secret
that is merely too short.
"""

from __future__ import annotations

import re
import secrets

MIN_LENGTH = 16
# Fewer unpredictable characters than this, once common words and runs are set aside: guessable.
MIN_SURPRISE = 6
SECRET_KEYS: tuple[tuple[str, ...], ...] = (
    ("http", "tokens", "admin"), ("http", "tokens", "kiosk"), ("http", "tokens", "signage"),
    ("qr", "secret"), ("central", "token"), ("mqtt", "password"),
)
GENERATE_HINT = ("generate one with `instore-edge gen-secret` "
                 "(or python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")

# The secret values shipped in config/store.example.toml and config/demo.toml: public, so never secret
# (tests/test_config.py checks this list against the files).
SHIPPED = frozenset({
    "change-me-mqtt-password-0000", "change-me-admin-token-0000", "change-me-kiosk-token-0000",
    "change-me-signage-token-0000", "change-me-central-token-0000", "change-me-qr-secret-0000000",
    "demo-admin-token-0000", "demo-kiosk-token-0000", "demo-signage-token-0000", "demo-central-token-0000",
    "demo-qr-secret-000000000",
})
# Long enough that a random token contains one by chance about once in a billion.
_PLACEHOLDERS = ("changeme", "replaceme", "placeholder", "example", "yourtoken", "yoursecret", "yourpassword",
                 "insertyour", "redacted")
# Words people build "secrets" from; taken out before the remaining characters are counted.
_WORDS = sorted({
    "secret", "secrets", "password", "passwd", "passphrase", "pass", "pwd", "token", "tokens", "admin",
    "administrator", "kiosk", "signage", "screen", "test", "tests", "testing", "demo", "example", "sample",
    "default", "change", "replace", "your", "mine", "the", "qr", "mqtt", "broker", "central", "store", "shop",
    "edge", "instore", "key", "api", "bench", "soak", "dev", "prod", "production", "staging", "local",
    "localhost", "letmein", "welcome", "qwerty", "qwertz", "azerty", "asdf", "abc", "abcdef", "xyz", "foo",
    "bar", "baz", "dummy", "fake", "not", "valid", "invalid", "insecure", "temp", "tmp", "user", "root",
    "server", "client", "staff", "guest", "login", "access", "auth", "master", "hello", "world", "iloveyou",
    "monkey", "dragon", "sunshine", "football", "trustno", "whatever", "super", "new", "old", "file", "env",
    "value", "string", "company", "retail",
}, key=len, reverse=True)
_LEET = str.maketrans("013457@$!", "oieastasi")


def _surprise(text: str) -> int:
    """Characters that do not continue a run (the same character, or the next/previous one: 0123, aaaa, cba)."""
    count, prev = 0, None
    for ch in text:
        if prev is None or abs(ord(ch) - ord(prev)) > 1:
            count += 1
        prev = ch
    return count


def weakness(value: str, context: tuple[str, ...] = ()) -> str | None:
    """Why `value` cannot be a secret, or None. `context` adds words known to be guessed here (the store id)."""
    if len(value) < MIN_LENGTH:
        return f"must have at least {MIN_LENGTH} characters"
    if value in SHIPPED:
        return "is an example value published with instore-edge, so it is no secret"
    folded = re.sub(r"[^a-z0-9]", "", value.lower())
    if any(marker in folded for marker in _PLACEHOLDERS):
        return "is a placeholder (like 'change-me-...'), not a secret"
    if re.fullmatch(r"(.+?)\1+", folded):
        return "repeats itself: it is guessable"
    words = [*(re.sub(r"[^a-z0-9]", "", part.lower()) for part in context),
             *(w for part in context for w in re.split(r"[^a-z0-9]+", part.lower()) if len(w) >= 3), *_WORDS]
    words = [w for w in words if w]
    plain, unleet = _without(folded, words), _without(folded.translate(_LEET), words)
    if min(_surprise(plain), _surprise(unleet)) < MIN_SURPRISE or (plain.isdigit() and len(plain) < 12):
        return "is guessable (common words and a few digits, or characters in sequence)"
    return None


def _without(text: str, words: list[str]) -> str:
    for word in words:
        text = text.replace(word, "")
    return text


def generate() -> str:
    """A fresh secret: 32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)
