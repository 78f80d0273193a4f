"""Each request's language (Flask-Babel), and what templates and page scripts need to speak it.

Who chooses: a page that must speak the store's language (signage, the kiosk until a shopper switches)
calls `use_store_language()`; any other page (the shoppers' landing pages, the dashboard, error pages)
follows `?lang=` (remembered in a cookie), then that cookie, then the browser's `Accept-Language` (best
match), then the store's `[store] language`.

In templates: `_("...")`, `ngettext("%(num)d item", "%(num)d items", n)`, `{{ page_lang() }}` for
`<html lang>`, `{{ amount|price }}`, `{{ n|number }}`, `{{ ts|date }}`, `{{ ts|time }}`, `{{ ts|datetime }}`
(epoch seconds or datetimes, in the store's time zone). In Python: `flask_babel.gettext as _`,
`page_lang()`, `price(amount, currency)`. Scripts get their texts ready-made from `strings_by_language`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from flask_babel import Babel, force_locale, get_locale, get_translations, refresh

from edge import i18n
from edge.config import Config

LANG_COOKIE = "instore_edge_lang"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600


def init_app(app: Flask, cfg: Config) -> None:
    """Flask-Babel on the app (catalogues in edge/translations), the language rules above, and the
    template helpers."""
    store = cfg.store

    def page_locale() -> str:
        forced = g.get("page_lang")
        if forced:
            return forced
        asked = i18n.language(request.args.get("lang"))
        if asked:
            g.lang_asked = asked
            return asked
        return (i18n.language(request.cookies.get(LANG_COOKIE))
                or request.accept_languages.best_match(i18n.LANGUAGES) or store.language)

    Babel(app, locale_selector=page_locale, timezone_selector=lambda: store.timezone,
          default_locale=store.language, default_translation_directories=str(i18n.TRANSLATIONS))

    @app.after_request
    def _remember_choice(resp: Response) -> Response:
        """A language picked with ?lang= stays for the next pages (a shopper's next scan)."""
        asked = g.get("lang_asked")
        if asked and request.cookies.get(LANG_COOKIE) != asked:
            resp.set_cookie(LANG_COOKIE, asked, max_age=LANG_COOKIE_MAX_AGE, httponly=True, samesite="Lax", path="/")
        return resp

    def currency_filter(amount: float | int | None, currency: str | None = None) -> str:
        return "" if amount is None else price(amount, currency or store.currency)

    app.jinja_env.globals.update(page_lang=page_lang, languages=languages)
    app.jinja_env.filters.update(
        price=currency_filter,
        number=lambda value: i18n.format_number(value, page_lang()),
        date=lambda value, format="medium": i18n.format_date(value, page_lang(), store.timezone, format),
        time=lambda value, format="short": i18n.format_time(value, page_lang(), store.timezone, format),
        datetime=lambda value, format="medium": i18n.format_datetime(value, page_lang(), store.timezone, format),
    )


def use_store_language() -> None:
    """This request speaks the store's language, whatever the browser prefers (signage, the kiosk)."""
    use_language(g.edge.cfg.store.language)


def use_language(code: str) -> None:
    """This request speaks `code` (one of edge.i18n.LANGUAGES), whatever the browser prefers."""
    g.page_lang = code
    refresh()


def page_lang() -> str:
    """The language of this request's page ("it", "en"): for <html lang> and formatting."""
    locale = get_locale()
    if locale is None:  # outside a request and an app
        return i18n.DEFAULT_LANGUAGE
    known = g.get("_page_lang")  # a page asks several times (each price, date, the <html> tag)
    if known is not None and known[0] is locale:
        return known[1]
    lang = i18n.language(str(locale)) or i18n.DEFAULT_LANGUAGE
    g._page_lang = (locale, lang)
    return lang


def languages() -> list[dict[str, str]]:
    """The languages a page can switch to: code and name in that language ("Italiano")."""
    return [{"code": code, "name": i18n.display_name(code)} for code in i18n.LANGUAGES]


def price(amount: float | int, currency: str) -> str:
    """A price in this request's language ("12,50 €", "€12.50")."""
    return i18n.format_price(amount, currency, page_lang())


def strings_by_language(build: Callable[[], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`build()` run once per language the edge speaks: a page script's texts, ready to switch without
    asking the server (`build` uses `_()` and `plural()`, like any view)."""
    out = {}
    for code in i18n.LANGUAGES:
        with force_locale(code):
            out[code] = build()
    return out


def plural(form: Callable[[Any, int], str]) -> dict[str, str]:
    """A plural text for a page script: CLDR category -> text with %(num)d left in, for Intl.PluralRules.
    Write `plural(lambda t, n: t.ngettext("%(num)d item", "%(num)d items", n))`, so the tools find the msgids."""
    translations = get_translations()
    return i18n.plural_forms(page_lang(), lambda n: form(translations, n))
