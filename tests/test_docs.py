"""The documentation the code cites exists: docs/method.md and its sections, and no file or command that is not
in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITING = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "src").rglob("*.yaml")), ROOT / "README.md"]


def test_cited_method_sections_exist():
    method = (ROOT / "docs" / "method.md").read_text()
    sections = set(re.findall(r"^## (\d)\.", method, re.MULTILINE))
    cited = set()
    for path in CITING:
        text = path.read_text()
        assert "METHOD.md" not in text, f"{path} cites METHOD.md, which is not in the repository"
        cited |= set(re.findall(r"docs/method\.md(?: section)? (\d)", text))
    assert cited and cited <= sections, f"cited sections {sorted(cited - sections)} missing from docs/method.md"
    assert "1. **Stochastic pair gradients**" in method and "2. **Stochastic fork point**" in method


def test_no_command_that_does_not_exist():
    import argparse

    from dhm.cli import build_parser

    parser = build_parser()
    commands = set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
    for path in CITING:
        for command in re.findall(r"`dhm ([a-z][a-z-]*[a-z])", path.read_text()):
            assert command in commands, f"{path} mentions `dhm {command}`, which does not exist"
