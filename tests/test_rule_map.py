"""docs/rules.md maps each documented rule to the tests that show it. This keeps the map honest:
every test it names exists, and every row of the README's rule tables has a row in it, so a
rule added to those tables without a test fails here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The README's rule tables: the paragraph or heading each follows, and the name the map uses.
TABLES = {"### Errors": "Errors table", "**Errors of routing.**": "Routing errors table",
          "**Tiers.**": "Tiers table"}


def table_rows(lines: list[str], start: int) -> list[list[str]]:
    """The body rows (cells stripped) of the first Markdown table at or after line START."""
    i = start
    while not lines[i].startswith("|"):
        i += 1
    rows = []
    for line in lines[i + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def readme_rows() -> dict[str, list[str]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    found = {}
    for marker, name in TABLES.items():
        start = next(i for i, line in enumerate(lines) if line.startswith(marker))
        rows = table_rows(lines, start)
        firsts = [row[0] for row in rows]
        # A row is named by its first cell, and by its last one too where the first repeats
        # (the Errors table has three 503s, told apart by their codes).
        found[name] = [(row[0] if firsts.count(row[0]) == 1 else f"{row[0]} {row[-1]}")
                       .replace("`", "") for row in rows]
    return found


def rule_map() -> list[tuple[str, str, list[str]]]:
    lines = (ROOT / "docs" / "rules.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| rule |"))
    return [(rule, section.replace("`", ""), re.findall(r"`(tests/[^`]+)`", tests))
            for rule, section, tests in table_rows(lines, start)]


def test_every_row_of_the_readmes_rule_tables_is_in_the_map():
    sections = {section for _, section, _ in rule_map()}
    tables = readme_rows()
    assert all(tables.values()), tables  # the tables were found, and have rows
    missing = [f"{name}: {row}" for name, rows in tables.items() for row in rows
               if f"{name}: {row}" not in sections]
    assert not missing, f"README rules with no row in docs/rules.md: {missing}"


def test_every_rule_names_tests_and_every_test_named_exists():
    rows = rule_map()
    assert len(rows) > 40
    for rule, _section, tests in rows:
        assert tests, f"no test named for {rule!r}"
        for node in tests:
            path, _, name = node.partition("::")
            assert (ROOT / path).is_file(), f"{node}: no such file"
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            assert callable(getattr(module, name, None)) and name.startswith("test_"), (
                f"{node}: no such test")
