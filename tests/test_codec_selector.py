"""The adaptive selector's decisions, and the bounds of everything the codec keeps."""

from __future__ import annotations

import numpy as np
import pytest
from test_codec_helpers import Session, profile

from fabric.codec import (
    PROFILES,
    CodecProfile,
    FrameChoice,
    PageDecoder,
    Prediction,
    choose,
    effective_rate,
)
from fabric.codec.content_index import ContentIndex
from fabric.codec.delta_cache import DeltaCache
from fabric.codec.selector import RAW, Selector
from fabric.errors import ConfigError
from fabric.memory import PAGE_SIZE, PageStore
from fabric.memory.content import fill_pages

MB = 1e6
Z1, Z19 = FrameChoice(level=1), FrameChoice(level=19)


def prediction(*, ratio: float, mbps: float, raw: float = 16 * MB) -> Prediction:
    return Prediction(raw_bytes=raw, wire_bytes=raw / ratio, cpu_s=raw / (mbps * MB))


def test_effective_rate_is_the_slower_of_link_times_ratio_and_codec_speed() -> None:
    p = prediction(ratio=4, mbps=300)
    assert effective_rate(p, 10 * MB) == pytest.approx(40 * MB)  # link-bound
    assert effective_rate(p, 1000 * MB) == pytest.approx(300 * MB)  # CPU-bound
    assert effective_rate(p, None) == pytest.approx(300 * MB)


def test_a_slow_link_prefers_ratio_no_limit_prefers_speed() -> None:
    fast = prediction(ratio=2, mbps=800)
    dense = prediction(ratio=5, mbps=60)
    raw = prediction(ratio=1, mbps=5000)
    options = {RAW: raw, Z1: fast, Z19: dense}
    assert choose(options, 5 * MB) == Z19  # 25 MB/s vs 10 vs 5
    assert choose(options, 125 * MB) == Z1  # min(250, 800) beats min(625, 60) and 125
    assert choose(options, None) == RAW  # the CPU is the bottleneck: the fastest wins


def test_incompressible_pages_go_raw_at_any_link_rate() -> None:
    options = {RAW: prediction(ratio=1.0, mbps=4000), Z1: prediction(ratio=0.999, mbps=900),
               Z19: prediction(ratio=1.0, mbps=20)}
    for link in (1 * MB, 125 * MB, 10_000 * MB, None):
        assert choose(options, link) == RAW


def test_exploration_is_seeded_and_only_on_a_fraction_of_batches() -> None:
    def run(seed: int) -> list[tuple[str, str | None]]:
        sel = Selector(alpha=0.5, explore_fraction=0.25, rng=np.random.default_rng(seed))
        preds = {RAW: None, Z1: None, Z19: None}
        out = []
        for _ in range(200):
            choice, probe = sel.pick(preds, 125 * MB, default=Z1)
            out.append((choice.name, probe.name if probe else None))
            for c in (choice, probe):
                if c is not None:
                    wire = {0: 1 << 20, 1: 1 << 18, 19: 1 << 17}[c.level]
                    secs = {0: 1e-4, 1: 3e-3, 19: 5e-2}[c.level]
                    sel.observe(c, raw_bytes=1 << 20, wire_bytes=wire, cpu_s=secs)
            preds = {c: prediction(ratio=sel.estimates[c].ratio, mbps=sel.estimates[c].bytes_per_s / MB)
                     if c in sel.estimates else None for c in preds}
        return out

    a = run(1)
    assert a == run(1)
    assert a[:2] == [("zstd-1", "raw"), ("zstd-1", "zstd-19")]  # the untried are probed first
    probes = sum(1 for _, p in a[2:] if p)
    assert 20 < probes < 80  # about a quarter of the batches
    assert {c for c, _ in a[2:]} == {"zstd-1"}


def test_the_encoder_learns_raw_for_noise_and_a_dense_level_for_a_slow_link() -> None:
    rng = np.random.default_rng(0)
    prof = profile(levels=(1, 19), delta=False, dedup=False, frame_bytes=256 << 10, explore_fraction=0.0)
    noise = Session.new(512, prof)
    noise.source.write_pages(np.arange(512), rng.integers(0, 256, (512, PAGE_SIZE), dtype=np.uint8))
    for _ in range(4):
        noise.send(np.arange(512), link=125 * MB, batch_pages=128)
        noise.next_round()
    assert noise.encoder.stats()["selector"]["picks"].get("raw", 0) >= 2
    assert noise.sent[-1].pages_by_encoding == {"zero": 0, "ref": 0, "delta": 0, "zstd": 0, "raw": 128}

    text = Session.new(512, prof)
    text.source.write_pages(np.arange(512), fill_pages(rng, 512))
    for _ in range(3):
        text.send(np.arange(512), link=0.05 * MB, batch_pages=128)
        text.next_round()
    picks = text.encoder.stats()["selector"]["picks"]
    assert picks.get("zstd-19", 0) >= 8, picks  # 12 batches: after the probes, the dense level
    unbounded = Session.new(512, prof)
    unbounded.source.write_pages(np.arange(512), fill_pages(rng, 512))
    for _ in range(3):
        unbounded.send(np.arange(512), link=None, batch_pages=128)
        unbounded.next_round()
    assert unbounded.encoder.stats()["selector"]["picks"].get("raw", 0) >= 8


def test_the_delta_cache_never_exceeds_its_byte_budget_and_evicts_the_least_recent() -> None:
    cache = DeltaCache(pages=1000, bytes_max=10 * PAGE_SIZE + 100)
    assert cache.slots_max == 10 and cache._data.nbytes <= cache.bytes_max
    rng = np.random.default_rng(0)
    contents = rng.integers(0, 256, (30, PAGE_SIZE), dtype=np.uint8)
    for start in range(0, 30, 3):
        idx = np.arange(start, start + 3)
        cache.put(idx, contents, idx)
        assert cache.bytes_used <= cache.bytes_max
    held = np.flatnonzero(cache.slots(np.arange(30)) >= 0)
    assert held.tolist() == list(range(20, 30))  # the ten most recently sent
    assert np.array_equal(cache.contents(cache.slots(held)), contents[20:30])
    big = np.arange(100, 125)
    cache.put(big, np.zeros((25, PAGE_SIZE), np.uint8), np.arange(25))  # one put larger than the cache
    assert cache.pages_cached == 10 and cache.slots(np.array([124]))[0] >= 0
    cache.drop(np.array([124, 5]))
    assert cache.pages_cached == 9


def test_the_encoders_cache_stays_within_budget_over_a_session() -> None:
    rng = np.random.default_rng(1)
    s = Session.new(256, profile(), delta_cache_bytes_max=32 * PAGE_SIZE)
    s.source.write_pages(np.arange(256), fill_pages(rng, 256))
    for _ in range(4):
        s.source.write_bytes(int(rng.integers(0, 256 * PAGE_SIZE - 8)), b"12345678")
        s.send(np.arange(256), batch_pages=50)
        s.next_round()
        cache = s.encoder.stats()["delta_cache"]
        assert cache["bytes"] <= cache["bytes_max"] == 32 * PAGE_SIZE
    assert s.in_sync()


def test_indexes_and_holdings_are_bounded() -> None:
    index = ContentIndex(pages=32, entries_max=5)
    index.record(np.arange(8), np.arange(100, 108, dtype=np.uint64), np.ones(8, bool))
    assert len(index) == 5 and index.lookup(104) == 4 and index.lookup(105) is None
    index.record(np.arange(2, 4), np.array([104, 999], np.uint64), np.ones(2, bool))
    assert index.lookup(104) == 2 and index.lookup(102) is None  # latest holder wins; old keys dropped
    index.record(np.arange(4, 6), np.zeros(2, np.uint64), np.zeros(2, bool))
    assert index.lookup(104) == 2  # page 4 held 104 once, but 104 now points at page 2
    index.forget_pages(np.arange(0, 20))
    assert len(index) == 0
    s = Session.new(16, profile(), holdings_keys_max=3)
    s.encoder.add_destination_holdings(np.arange(160, dtype=np.uint8).reshape(10, 16))
    assert s.encoder.stats()["holdings"] == {"keys": 3, "dropped": 7}
    with pytest.raises(ValueError, match="holdings must be uint8"):
        s.encoder.add_destination_holdings(np.zeros((2, 8), np.uint8))


def test_the_number_of_dictionaries_is_bounded() -> None:
    with pytest.raises(ConfigError, match="dictionaries_max"):
        PageDecoder(memory=PageStore(4), dictionaries_max=10_000)
    # One is trained per encoder; the decoder refuses more than its bound (see test_codec_hostile).
    rng = np.random.default_rng(3)
    s = Session.new(128, profile(levels=(3,), dictionary=True, dictionary_sample_pages=64,
                                 dictionary_bytes=8192), frame_choice=FrameChoice(level=3, dictionary=True))
    s.source.write_pages(np.arange(128), fill_pages(rng, 128))
    for _ in range(3):
        s.send(np.arange(128), batch_pages=40)
        s.next_round()
    assert len(s.decoder._dictionaries) == 1
    assert s.in_sync()


@pytest.mark.parametrize(("field", "value"), [
    ("zstd_levels", ()), ("zstd_levels", (0,)), ("zstd_levels", (1, 1)), ("zstd_levels", (22,)),
    ("frame_bytes", 32 << 10), ("frame_bytes", (1 << 20) + PAGE_SIZE), ("frame_bytes", (64 << 10) + 1),
    ("explore_fraction", 0.9), ("ewma_alpha", 0.0), ("dictionary_bytes", 1 << 30),
    ("dictionary_sample_pages", 1),
])
def test_profiles_are_checked_when_built(field: str, value: object) -> None:
    kw = {"name": "p", "zstd_levels": (1,), "delta": True, "dedup": True, "dictionary": False,
          "frame_bytes": 256 << 10, field: value}
    with pytest.raises(ConfigError, match=field):
        CodecProfile(**kw)  # type: ignore[arg-type]


def test_the_shipped_profiles_go_from_speed_to_ratio() -> None:
    dc, hy, inet = PROFILES["datacenter"], PROFILES["hybrid"], PROFILES["internet"]
    assert max(dc.zstd_levels) <= max(hy.zstd_levels) <= max(inet.zstd_levels)
    assert dc.frame_bytes <= hy.frame_bytes <= inet.frame_bytes
    # dictionaries did not pay at these frame sizes: off unless the migration asks
    assert not (inet.dictionary or hy.dictionary or dc.dictionary)
    from fabric.migration import MigrationConfig
    from fabric.migration.encoders import profile_for
    assert profile_for("internet", MigrationConfig(zstd_dictionary=True)).dictionary
    assert profile_for("internet", MigrationConfig()) == inet


def test_encoder_limits_are_checked() -> None:
    from fabric.codec import PageEncoder

    for kw in ({"pages": 0}, {"delta_cache_bytes_max": -1}, {"index_entries_max": 1 << 40},
               {"frame_choice": FrameChoice(level=7)}):
        with pytest.raises(ConfigError):
            PageEncoder(**{"pages": 8, "profile": profile(), **kw})  # type: ignore[arg-type]
