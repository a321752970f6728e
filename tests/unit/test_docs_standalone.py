"""The repository stands alone: no file cites design notes that live outside it (a user who
clones the project could not follow them). Facts the code relies on are in docs/facts.md."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT

# Spelled in pieces so that this file does not match itself.
_NOTES = ("FACTS", "VALIDATION", "RECIPES", "ARCHITECTURE", "STYLE")
OUTSIDE_NOTES = re.compile(r"\b(" + "|".join(_NOTES) + r")\.md\b|" + "shared" + "/design")


def test_no_file_cites_notes_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    hits = []
    for rel in files:
        path = ROOT / rel
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        hits += [f"{rel}:{n}: {line.strip()[:100]}" for n, line in enumerate(text.splitlines(), 1)
                 if OUTSIDE_NOTES.search(line)]
    assert not hits, "\n".join(hits)


def test_facts_page_exists_and_is_cited() -> None:
    assert (ROOT / "docs" / "facts.md").is_file()
    out = subprocess.run(["git", "grep", "-l", "docs/facts.md"], cwd=ROOT, capture_output=True,
                         text=True).stdout.split()
    assert any(p.startswith("src/") for p in out), out
