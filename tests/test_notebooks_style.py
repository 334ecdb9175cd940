"""The notebooks read as narrative: short code cells within the book's column, importing the
notebook-facing names from ``helpers`` itself (every one of them exists there)."""

import re
from pathlib import Path

import pytest

import helpers

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.md"))
#: at most this many non-blank, non-comment lines in a code cell
MAX_CELL_LINES = 12
#: the book's column, in characters
MAX_LINE_WIDTH = 88
#: notebooks being rewritten on another branch, exempt until they land (then remove them here)
BEING_REWRITTEN: set[str] = set()

CELL = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)


def code_cells(text: str) -> list[str]:
    return CELL.findall(text)


def cell_lines(cell: str) -> int:
    """Non-blank lines that are not comments."""
    return sum(1 for line in cell.splitlines() if line.strip() and not line.strip().startswith("#"))


def style_problems(text: str) -> list[str]:
    """One line per cell that is too long and per line that is too wide."""
    problems = []
    for i, cell in enumerate(code_cells(text), 1):
        if cell_lines(cell) > MAX_CELL_LINES:
            problems.append(f"cell {i} has {cell_lines(cell)} code lines (at most {MAX_CELL_LINES})")
        problems += [f"cell {i}: a line of {len(line)} characters (at most {MAX_LINE_WIDTH}): {line.strip()[:40]}"
                     for line in cell.splitlines() if len(line) > MAX_LINE_WIDTH]
    return problems


def test_the_check_finds_long_cells_and_wide_lines():
    ok = "```{code-cell} ipython3\n# a comment\n" + "x = 1\n\n" * 12 + "```\n"
    assert style_problems(ok) == []
    long = ok.replace("x = 1\n\n", "x = 1\n", 1).replace("```\n", "y = 2\n```\n", 1)
    assert style_problems(long.replace("# a comment\n", "")) == ["cell 1 has 13 code lines (at most 12)"]
    wide = "text\n```{code-cell} ipython3\nprint('" + "a" * 90 + "')\n```\n"
    assert style_problems(wide) == [f"cell 1: a line of 99 characters (at most 88): print('{'a' * 33}"]


def test_the_exempt_notebooks_exist():
    assert BEING_REWRITTEN <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in BEING_REWRITTEN], ids=lambda p: p.name)
def test_cells_are_short_and_within_the_column(path):
    assert style_problems(path.read_text()) == []


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in BEING_REWRITTEN], ids=lambda p: p.name)
def test_notebooks_import_from_helpers_itself(path):
    code = "\n".join(code_cells(path.read_text()))
    assert not re.findall(r"^\s*(?:from|import) helpers\.\S+", code, re.M)
    names = {name.strip() for group in re.findall(r"^from helpers import \(?([^)\n]*(?:\n[^)\n]*)*?)\)?$", code, re.M)
             for name in group.replace("\n", " ").split(",") if name.strip()}
    assert names, "the notebook imports nothing from helpers"
    assert sorted(n for n in names if n not in helpers.__all__) == []
