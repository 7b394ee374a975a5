"""Every document and comment stands on its own: none points at papers a user does not have.

The project grew from design documents and an issue tracker that do not ship
with it; a comment that says "see seed 002" or "(issue 3, item 8)" sends a
reader to nothing. Say the thing itself.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", ".venv-llm", "vendor", "node_modules", "__pycache__", "screenshots"}
SUFFIXES = {".py", ".md", ".js", ".html", ".css", ".toml", ".cfg", ".txt", ""}
#: "seed 000", "seeds/002_…", "seed document", "issue 3", "(issue 12, item 2)"; an
#: upstream project's public issue ("upstream issue #45") is a pointer anyone can follow.
POINTERS = re.compile(
    r"\bseeds?/|\bseed[ _]0\d\d\b|\bseed document|(?<!upstream )\bissue #?\d+\b", re.IGNORECASE
)


def _files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.parts):
            continue
        if path.is_file() and path.suffix in SUFFIXES and path != Path(__file__).resolve():
            out.append(path)
    return out


def test_no_document_or_comment_points_at_files_a_user_does_not_have() -> None:
    files = _files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if POINTERS.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not hits, "say the thing itself:\n" + "\n".join(hits)


def test_the_guard_catches_a_pointer() -> None:
    assert POINTERS.search("as seed 000 says")
    assert POINTERS.search("see seeds/002_6184.txt")
    assert POINTERS.search("(issue 3, item 8)")
    assert not POINTERS.search("the mock's seed bytes; fixed upstream (upstream issue #45)")
