"""What a newcomer reads first stays true: links point at files in this repository, and the README's
example of a demo decision names a screen, a rule and a zone the demo really has."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|`((?:\.\./|docs/|config/|scripts/)[^`\s]*\.(?:md|toml|py|png))`")


def test_readme_and_docs_refer_only_to_files_in_the_repository() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for doc in documents:
        for match in LINK.finditer(doc.read_text(encoding="utf-8")):
            target = (match.group(1) or match.group(2)).split("#", 1)[0]
            if not target or re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            base = ROOT if match.group(2) else doc.parent
            path = (base / target).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name} refers to {target}, outside the repository"
            assert path.exists(), f"{doc.name} refers to {target}, which does not exist"
            checked += 1
    assert checked >= 5


def test_readme_decision_example_is_what_the_demo_prints() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^screen (\S+) ← (\S+) \(rule (\S+), zone (\S+)\)$", readme, re.M)
    assert found, "the README shows no decision line"
    screen, content, rule, zone = found.groups()
    demo = tomllib.loads((ROOT / "config" / "demo.toml").read_text(encoding="utf-8"))
    screens = {s["id"]: s for s in demo["screens"]}
    rules = {r["id"]: r for r in demo["rules"]}
    assert screen in screens and screens[screen]["zone"] == zone
    assert rule in rules and rules[rule]["show"]["content_id"] == content
    assert rules[rule]["when"].get("zone") == zone
