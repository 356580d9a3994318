"""The README's architecture and figures name files of this repository: each one it names exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITTEN_WHEN_RUN = {"bench/results/"}  # the benchmarks' output folder: not in a fresh checkout


def test_every_file_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`((?:backend|bench|tests|models|migrations)/[\w./-]+)`", readme)) - WRITTEN_WHEN_RUN
    assert len(named) > 40  # the pattern still finds them
    assert sorted(p for p in named if not (ROOT / p.rstrip("/")).exists()) == []
