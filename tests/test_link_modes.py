"""The ledger's mode from its links (fabric.ledger.link_modes): the worst link decides, with hysteresis."""

from __future__ import annotations

import pytest

from fabric.errors import ConfigError
from fabric.ledger.link_modes import LedgerLinkModes, link_key, links_between
from fabric.transport.mode import Mode

DC = (0.002, 10e9)  # RTT s, bandwidth bit/s: a datacenter link
HYBRID = (0.030, 10e9)
INTERNET = (0.080, 2e9)


def test_links_are_every_pair_of_data_centers_or_the_one_inside() -> None:
    assert links_between(["b", "a", "c", "a"]) == (("a", "b"), ("a", "c"), ("b", "c"))
    assert links_between(["a", "a"]) == (("a", "a"),)
    assert link_key("z", "a") == link_key("a", "z") == ("a", "z")
    with pytest.raises(ConfigError):
        links_between([])


def test_no_mode_until_every_link_is_measured_then_the_worst_link_decides() -> None:
    modes = LedgerLinkModes(["a", "b", "c"])
    assert modes.observe("a", "b", *DC) is None and modes.mode is None
    assert modes.observe("c", "a", *DC) is None  # either direction names the same link
    assert modes.observe("b", "c", *HYBRID) is Mode.HYBRID  # the first time it is known
    assert modes.mode is Mode.HYBRID and modes.changes == 0
    d = modes.describe()
    assert d["mode"] == "hybrid" and d["links"]["b|c"]["rtt_ms"] == 30.0
    assert d["links"]["a|b"]["mode"] == "datacenter" and d["links"]["a|b"]["probes"] == 1


def test_one_noisy_probe_does_not_switch_the_ledger() -> None:
    modes = LedgerLinkModes(["a", "b"], dwell_samples=3)
    assert modes.observe("a", "b", *DC) is Mode.DATACENTER
    assert modes.observe("a", "b", *INTERNET) is None  # one sample: not yet
    assert modes.observe("a", "b", *DC) is None  # and the streak is broken
    assert [modes.observe("a", "b", *INTERNET) for _ in range(3)] == [None, None, Mode.INTERNET]
    assert modes.mode is Mode.INTERNET and modes.changes == 1
    # Near a threshold (RTT 10 ms +- 20%) a measurement belongs to no mode: no flapping.
    assert all(modes.observe("a", "b", 0.0105, 10e9) is None for _ in range(10))


def test_a_lost_probe_is_not_a_measurement_and_unknown_links_are_refused() -> None:
    modes = LedgerLinkModes(["a", "b"], dwell_samples=1)
    modes.observe("a", "b", *INTERNET)
    for _ in range(5):
        modes.probe_lost("a", "b")
    assert modes.mode is Mode.INTERNET and modes.describe()["links"]["a|b"]["lost"] == 5
    with pytest.raises(ConfigError, match="not a link"):
        modes.observe("a", "x", *DC)


def test_the_worst_link_keeps_the_ledger_in_its_mode() -> None:
    modes = LedgerLinkModes(["a", "b", "c"], dwell_samples=1)
    for pair in (("a", "b"), ("a", "c"), ("b", "c")):
        modes.observe(*pair, *INTERNET)
    assert modes.mode is Mode.INTERNET
    assert modes.observe("a", "b", *DC) is None and modes.observe("a", "c", *DC) is None
    assert modes.mode is Mode.INTERNET  # b-c is still an internet link
    assert modes.observe("b", "c", *DC) is Mode.DATACENTER
