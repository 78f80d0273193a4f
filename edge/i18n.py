"""Languages: which ones the edge speaks, texts per language, and prices, numbers and dates for a locale.

A leaf (Babel only, no Flask), so config, domain code and the pages share one set of rules:

- `LANGUAGES`: the languages with a complete message catalogue (edge/translations/<lang>/LC_MESSAGES/
  messages.po, compiled to .mo next to it by `scripts/i18n compile`); English is the source language of
  the msgids. A store's `[store] language` must be one of them.
- `localized`: the text of a content item, a product or a rule's data in a page's language, falling back
  to the store's language, then to the untranslated text. Config, the central store and rule data write
  per-language text the same way: `{"title": "Autumn", "i18n": {"it": {"title": "Autunno"}}}`.
- `translate` / `translate_plural`: catalogue lookups outside a request (the CLI's printable sheet);
  pages use Flask-Babel's `_()` / `ngettext()` (edge/web/i18n.py picks the request's language).
- `format_price`, `format_number`, `format_date`, `format_time`, `format_datetime`: Babel's CLDR formats,
  so "12,50 €" in Italian and "€12.50" in English; nothing formats by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from babel.support import NullTranslations, Translations

LANGUAGES = ("en", "it")  # each with a complete catalogue; add one with `scripts/i18n init <code>`
SOURCE_LANGUAGE = "en"  # the language the msgids are written in
DEFAULT_LANGUAGE = "en"
DEFAULT_CURRENCY = "EUR"
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
DOMAIN = "messages"
# Plural categories are CLDR's (what the browser's Intl.PluralRules answers); these counts reach every
# category of the languages above and of most others ("many" in Italian is for a million).
_PLURAL_SAMPLES = (*range(0, 112), 1000, 10_000, 100_000, 1_000_000, 10_000_000)


def N_(message: str) -> str:
    """Marks a text for the catalogues where it is defined (a table of constants); translate it where it is
    shown, with `_()` or `translate()`."""
    return message


def language(tag: str | None) -> str | None:
    """The supported language a language tag names ("it", "it-IT", "it_IT", "IT" -> "it"), or None."""
    if not isinstance(tag, str) or not tag.strip():
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def check_language(value: str) -> str:
    """A config's language code: one of LANGUAGES exactly; ValueError saying what to write otherwise."""
    if value in LANGUAGES:
        return value
    supported = ", ".join(repr(code) for code in LANGUAGES)
    near = language(value)
    if near is not None:
        raise ValueError(f"write the language as {near!r}, not {value!r} (the edge speaks {supported})")
    raise ValueError(f"unsupported language {value!r}: the edge speaks {supported}; a new language needs its "
                     "message catalogue first (scripts/i18n init <code>, see README 'Languages')")


def check_currency(value: str) -> str:
    """An ISO 4217 currency code Babel knows ("EUR", "CHF", "GBP"); ValueError otherwise."""
    if len(value) == 3 and value.isalpha() and value.isupper() and babel_numbers.is_currency(value):
        return value
    upper = value.strip().upper()
    hint = f" (did you mean {upper!r}?)" if babel_numbers.is_currency(upper) and upper != value else ""
    raise ValueError(f"unknown currency {value!r}{hint}: use an ISO 4217 code such as 'EUR', 'CHF' or 'GBP'")


def display_name(lang: str) -> str:
    """A language's name in that language, capitalized for a switch ("English", "Italiano")."""
    name = Locale.parse(lang).get_display_name(lang) or lang
    return name[:1].upper() + name[1:]


# --- texts per language --------------------------------------------------------------------------------

def localized(texts: Mapping[str, Any], lang: str, default: str,
              fields: Iterable[str] = ("title", "body")) -> dict[str, Any]:
    """Each of `fields` in `lang`, else in the store's `default` language, else the untranslated value.

    `texts` is a content item, a product or a rule's data as config and the central store write them:
    the untranslated fields plus `"i18n": {"<lang>": {"<field>": "..."}}`. Each field falls back on its
    own, so a translation may carry only a title. Values that are not text are passed through as they are.
    """
    per = texts.get("i18n")
    per = per if isinstance(per, Mapping) else {}
    out: dict[str, Any] = {}
    for field in fields:
        value = texts.get(field)
        for code in (lang, default):
            entry = per.get(code)
            found = entry.get(field) if isinstance(entry, Mapping) else None
            if isinstance(found, str) and found:
                value = found
                break
        out[field] = value
    return out


def localized_all(texts: Mapping[str, Any], default: str, fields: Iterable[str] = ("title", "body"),
                  languages: Iterable[str] = LANGUAGES) -> dict[str, dict[str, Any]]:
    """`localized` for every language the edge speaks: for a page that switches language in the browser."""
    fields = tuple(fields)
    return {lang: localized(texts, lang, default, fields) for lang in languages}


# --- catalogues outside a request ----------------------------------------------------------------------

@lru_cache(maxsize=None)
def translations(lang: str) -> NullTranslations:
    """The compiled catalogue of a language (an empty one for the source language when none is compiled)."""
    return Translations.load(str(TRANSLATIONS), [lang], DOMAIN)


def translate(lang: str, message: str, **variables: Any) -> str:
    """`message` (a msgid) in `lang`, with %(name)s placeholders filled from `variables`."""
    text = translations(lang).gettext(message)
    return text % variables if variables else text


def translate_plural(lang: str, singular: str, plural: str, num: int, **variables: Any) -> str:
    """The plural form of a msgid for `num` in `lang`; %(num)d and `variables` filled in."""
    return translations(lang).ngettext(singular, plural, num) % {"num": num, **variables}


def plural_forms(lang: str, form: Any) -> dict[str, str]:
    """CLDR plural category ("one", "many", "other"...) -> the text `form(n)` gives for a count in that
    category, placeholders left in: for pages that pluralize in the browser with Intl.PluralRules.

    `form` is `lambda n: translations.ngettext("%(num)d item", "%(num)d items", n)` (the msgids written
    out, so the catalogue tools find them)."""
    rule = Locale.parse(lang).plural_form
    out: dict[str, str] = {}
    for n in _PLURAL_SAMPLES:
        category = rule(n)
        if category not in out:
            out[category] = form(n)
        if len(out) == len(rule.tags) + 1:  # every category and "other"
            break
    return out


# --- formatting ------------------------------------------------------------------------------------------

def format_price(amount: float | int, currency: str, lang: str) -> str:
    """A price as the locale writes it: "12,50 €" (it), "€12.50" (en)."""
    return babel_numbers.format_currency(amount, currency, locale=lang)


def format_number(value: float | int, lang: str) -> str:
    """A number with the locale's separators: "1.234,5" (it), "1,234.5" (en)."""
    return babel_numbers.format_decimal(value, locale=lang)


def _moment(value: dt.datetime | float | int, tz: str) -> dt.datetime:
    """An aware datetime in the store's zone, from a datetime or epoch seconds."""
    zone = ZoneInfo(tz)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).astimezone(zone)
    return dt.datetime.fromtimestamp(float(value), zone)


def format_date(value: dt.date | dt.datetime | float | int, lang: str, tz: str = "UTC",
                format: str = "medium") -> str:
    """A date as the locale writes it ("14 mar 2025", "Mar 14, 2025"); datetimes and epoch seconds are
    read in the store's time zone `tz`."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return babel_dates.format_date(value, format=format, locale=lang)
    return babel_dates.format_date(_moment(value, tz).date(), format=format, locale=lang)


def format_time(value: dt.datetime | float | int, lang: str, tz: str = "UTC", format: str = "short") -> str:
    """A time of day in the store's zone ("09:30" in Italian, "9:30 AM" in English)."""
    return babel_dates.format_time(_moment(value, tz), format=format, locale=lang)


def format_datetime(value: dt.datetime | float | int, lang: str, tz: str = "UTC", format: str = "medium") -> str:
    """A date and time in the store's zone, as the locale writes them."""
    return babel_dates.format_datetime(_moment(value, tz), format=format, locale=lang)
