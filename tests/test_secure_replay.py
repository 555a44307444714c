"""The replay window against a plain model: a set of accepted numbers and the window's reach."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.secure.errors import OutOfWindowError, ReplayedFrameError
from fabric.secure.replay import ReplayWindow


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 70), seqs=st.lists(st.integers(0, 400), max_size=300))
def test_window_matches_the_model(size: int, seqs: list[int]) -> None:
    window = ReplayWindow(size)
    accepted: set[int] = set()
    highest = -1
    for seq in seqs:
        if seq in accepted and seq > highest - size:
            expected: type[Exception] | None = ReplayedFrameError
        elif seq <= highest - size or seq > highest + size:
            expected = OutOfWindowError
        else:
            expected = None
        if expected is None:
            window.check(seq)
            window.accept(seq)
            accepted.add(seq)
            highest = max(highest, seq)
        else:
            with pytest.raises(expected):
                window.check(seq)
        assert window.highest == highest


def test_in_order_stream_and_the_edges() -> None:
    window = ReplayWindow(4)
    for seq in range(100):
        window.check(seq)
        window.accept(seq)
    with pytest.raises(ReplayedFrameError):
        window.check(96)
    with pytest.raises(OutOfWindowError, match="too old"):
        window.check(95)
    window.check(103)  # highest + size
    with pytest.raises(OutOfWindowError, match="too far ahead"):
        window.check(104)
