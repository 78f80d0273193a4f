"""A config problem, and the error that lists them all: where each is, what is wrong, how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

from edge.model import EdgeError


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is, what is wrong, how to fix it."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(EdgeError):
    """The config file cannot be used; `issues` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} problem(s) in the config:\n{lines}")
