"""The README's benchmark table is the one bench/results/latest.json makes, not typed."""

from __future__ import annotations

import json

from bench.readme_table import END, LATEST, README, START, render


def test_the_readme_benchmark_table_is_made_from_the_latest_results() -> None:
    text = README.read_text()
    assert START in text and END in text
    shown = text.split(START, 1)[1].split(END, 1)[0]
    assert shown == "\n" + render(json.loads(LATEST.read_text()))
