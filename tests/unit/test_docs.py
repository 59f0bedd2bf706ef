"""Docstrings cite only what the repo holds: every "docs/methods.md, B3" names a section that exists."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_every_methods_citation_names_a_section_of_docs_methods():
    sections = set(re.findall(r"\*\*([A-D][0-9]) ", (REPO / "docs" / "methods.md").read_text()))
    assert {"A2", "A3", "B1", "B3", "C4", "D1"} <= sections
    cited = {}
    for path in sorted((REPO / "neuronkit").rglob("*.py")):
        text = path.read_text()
        assert "METHODS.md" not in text and "METHODS C" not in text, f"{path}: cites a file outside the repo"
        for match in re.finditer(r"docs/methods\.md, ([A-D][0-9])(?: and ([A-D][0-9]))?", text):
            for section in filter(None, match.groups()):
                cited.setdefault(section, []).append(path.name)
    assert len(cited) >= 8
    assert not {s: files for s, files in cited.items() if s not in sections}
