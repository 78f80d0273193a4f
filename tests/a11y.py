"""Accessibility checks for the Chromium page tests: axe-core's WCAG 2.1 A/AA rules on a live page.

Kiosks (self-service terminals) and the shopper landing pages (an e-commerce service) fall under the
European Accessibility Act. Every page a test opens is held to the same rules:

    from a11y import assert_accessible
    assert_accessible(page, "kiosk, identified")

axe-core is vendored (tests/vendor/axe-core, from the npm registry) and injected through the DevTools
protocol, so the pages' Content-Security-Policy (script-src 'self') and disabled JavaScript do not stop it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
WCAG21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_source: str | None = None


def _axe_source() -> str:
    global _source
    if _source is None:
        _source = AXE_JS.read_text(encoding="utf-8")
    return _source


def axe_violations(page: Any, include: str | None = None) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now (optionally only inside `include`)."""
    # Colours are measured as they are painted: let transitions and entrance animations finish first.
    page.evaluate("""() => Promise.all(document.getAnimations()
        .filter(a => a.effect && a.effect.getComputedTiming().endTime !== Infinity)
        .map(a => a.finished.catch(() => null)))""")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_axe_source())
    return page.evaluate(
        """async ([include, tags]) => {
            const result = await window.axe.run(include ? {include: [include]} : document,
                                                {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary}))}));
        }""", [include, WCAG21_AA])


def describe(violations: list[dict[str, Any]], limit: int = 5) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']}: {len(v['nodes'])} element(s)")
        for node in v["nodes"][:limit]:
            summary = " ".join((node["summary"] or "").split())
            lines.append(f"    {node['target']}: {summary[:300]}")
    return "\n".join(lines)


def _violations_without_javascript(page: Any, include: str | None) -> list[dict[str, Any]]:
    """axe needs timers, which a context with JavaScript off never runs: check the same document (its HTML
    as the page has it, its styles from the server) in a fresh context with JavaScript on. Only the page's
    own URL is answered from the copy, so nothing is requested twice from the server's journeys."""
    html, url = page.content(), page.url
    browser = page.context.browser
    context = browser.new_context(viewport=page.viewport_size)
    try:
        context.route(lambda u: u == url, lambda route: route.fulfill(
            status=200, content_type="text/html; charset=utf-8", body=html))
        copy = context.new_page()
        copy.goto(url)
        return axe_violations(copy, include)
    finally:
        context.close()


def assert_accessible(page: Any, what: str = "", include: str | None = None, *, javascript: bool = True) -> None:
    """Fail listing every WCAG 2.1 A/AA violation axe-core finds on the page (`what` names it in the message).

    Pass javascript=False for a page opened in a context with JavaScript disabled."""
    violations = axe_violations(page, include) if javascript else _violations_without_javascript(page, include)
    assert not violations, f"accessibility violations on {what or page.url}:\n{describe(violations)}"


def assert_open_pages_accessible(contexts: list[Any]) -> None:
    """The check a page-test fixture runs when its test ends, on every page still open: pages added by
    later tests are held to the rules without anyone remembering to ask. The contexts must have
    JavaScript on (axe waits on timers; check a no-JavaScript page with assert_accessible(javascript=False))."""
    problems = []
    for context in contexts:
        for page in context.pages:
            if page.is_closed() or not page.url.startswith("http"):
                continue
            violations = axe_violations(page)
            if violations:
                problems.append(f"{page.url}:\n{describe(violations)}")
    assert not problems, "accessibility violations on pages left open by the test:\n" + "\n".join(problems)
