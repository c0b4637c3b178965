"""Every test that README.md or docs/*.md cite as the evidence for a claim (`tests/x.py::test_name`, and the
`::other_name` entries listed after it) exists: a renamed or removed test must take its citation with it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: `tests/path.py::name` then any number of `, `::name`` continuations
CITATION = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`((?:,? `::\w+`)*)")


def citations(text: str) -> list[tuple[str, str]]:
    """``(test file, test name)`` for every test ``text`` cites."""
    found = []
    for match in CITATION.finditer(text):
        for name in [match.group(2), *re.findall(r"`::(\w+)`", match.group(3))]:
            found.append((match.group(1), name))
    return found


def test_citations_are_read_with_their_continuations():
    text = "see `tests/a.py::test_one`, `::test_two` and `tests/b/c.py::test_three` but not `tests/a.py` alone"
    assert citations(text) == [("tests/a.py", "test_one"), ("tests/a.py", "test_two"), ("tests/b/c.py", "test_three")]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_test_exists(document):
    cited = citations(document.read_text(encoding="utf-8"))
    missing = [f"{file}::{name}" for file, name in cited
               if not (ROOT / file).is_file()
               or not re.search(rf"^\s*(async\s+)?def {name}\(", (ROOT / file).read_text(encoding="utf-8"), re.M)]
    assert missing == [], f"{document.name} cites tests that do not exist: {missing}"
