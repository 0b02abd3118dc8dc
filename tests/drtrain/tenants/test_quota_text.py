"""Sizes in quota answers: the unit that keeps the figure readable."""
from __future__ import annotations

import pytest

from drtrain.tenants.quota import size_text


@pytest.mark.parametrize("n, text", [(0, "0 bytes"), (300, "300 bytes"), (50_000, "48.8 KiB"),
                                     (3 * 2**20, "3.0 MiB"), (int(1.5 * 2**30), "1.5 GiB")])
def test_size_text_picks_the_unit_that_keeps_the_figure_at_one_or_more(n: int, text: str):
    assert size_text(n) == text
