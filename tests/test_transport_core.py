"""AMST cores one at a time: config, link, token bucket, chunks and acks, receiver, sender."""

from __future__ import annotations

import itertools
import pickle
from dataclasses import replace

import pytest

import fabric.transport as transport
from fabric.errors import ConfigError, FabricError
from fabric.transport import (
    DEFAULT_LINKS,
    INTRA_DC_LINK,
    Ack,
    Chunk,
    Echo,
    EmulatedLink,
    LinkSpec,
    LocalProtocolError,
    PeerProtocolError,
    RetriesExhausted,
    TokenBucket,
    TransportConfig,
    TransportError,
    TransportReceiver,
    TransportSender,
    default_link,
)

KiB = 1 << 10
CHUNK = 4 * KiB


def small_config(**kw: object) -> TransportConfig:
    """4 KiB chunks, messages up to 64 KiB, a 256 KiB reassembly window."""
    base = TransportConfig(chunk_bytes=CHUNK, message_bytes_max=64 * KiB, reassembly_bytes_max=256 * KiB,
                           inflight_bytes_max=128 * KiB, send_buffer_bytes_max=384 * KiB,
                           unsent_bytes_max=128 * KiB, window_chunks_max=128)
    return replace(base, **kw).validate()  # type: ignore[arg-type]


def chunk(msg_id: int, msg_start: int, msg_len: int, offset: int, data: bytes | None = None,
          attempt: int = 0) -> Chunk:
    size = min(CHUNK, msg_len - offset)
    return Chunk(msg_id=msg_id, msg_start=msg_start, msg_len=msg_len, offset=offset,
                 data=data if data is not None else bytes([msg_id % 256]) * size, stream=0,
                 attempt=attempt, sent_at=0.0)


# -- public surface ---------------------------------------------------------------


def test_public_names_are_importable_and_errors_are_fabric_errors() -> None:
    for name in transport.__all__:
        assert getattr(transport, name) is not None, name
    for err in (TransportError, RetriesExhausted, LocalProtocolError, PeerProtocolError):
        assert issubclass(err, FabricError)
    assert issubclass(RetriesExhausted, TransportError) and issubclass(PeerProtocolError, TransportError)


# -- config ------------------------------------------------------------------------


def test_default_config_is_valid_and_sized_for_10_gbit_at_150_ms() -> None:
    cfg = TransportConfig().validate()
    bdp = 10e9 / 8 * 0.150
    assert cfg.inflight_bytes_max >= cfg.cwnd_gain * bdp  # the window can cover the BDP
    assert cfg.reassembly_bytes_max >= 1.5 * bdp + cfg.message_bytes_max
    assert TransportConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad", [
    {"chunk_bytes": 100}, {"streams": 0}, {"message_bytes_max": 1024},
    {"reassembly_bytes_max": 1 << 20},  # smaller than one message
    {"inflight_bytes_max": 1 << 40}, {"unsent_bytes_max": 1 << 20}, {"window_chunks_max": 2},
    {"cwnd_gain": 0.5}, {"rto_s_initial": 1.0, "rto_s_min": 2.0}, {"max_bandwidth_bytes_per_s": 1.0},
    {"chunk_retries_max": -1},
])
def test_bad_config_values_raise_config_error_naming_the_field(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        replace(TransportConfig(), **bad).validate()


def test_unknown_config_keys_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        TransportConfig.from_dict({"chunk_size": 1})


# -- link -------------------------------------------------------------------------------


def test_default_links_are_symmetric_realistic_and_cover_every_pair() -> None:
    dcs = ("us-east", "us-west", "eu-west")
    for a in dcs:
        assert default_link(a, a) is INTRA_DC_LINK
        for b in dcs:
            assert default_link(a, b) == default_link(b, a)
    for spec in DEFAULT_LINKS.values():
        assert 0.060 <= spec.rtt_s <= 0.160 and 1e9 <= spec.bandwidth_bps <= 10e9
    with pytest.raises(ConfigError, match="no default link"):
        default_link("us-east", "mars")
    with pytest.raises(ConfigError, match="rtt_s"):
        LinkSpec(bandwidth_bps=1e9, rtt_s=-1.0)


def test_link_serializes_fifo_then_propagates_half_the_rtt() -> None:
    spec = LinkSpec(bandwidth_bps=8e6, rtt_s=0.1)  # 1 MB/s: 1000 bytes take 1 ms
    link = EmulatedLink(spec, seed=1)
    assert link.transmit(0.0, 1000) == pytest.approx(0.001 + 0.05)
    assert link.transmit(0.0, 1000) == pytest.approx(0.002 + 0.05)  # queued behind the first
    assert link.transmit(0.5, 1000) == pytest.approx(0.501 + 0.05)  # idle link: no queue
    assert link.ack_arrival(1.0) == pytest.approx(1.05)
    assert link.busy_s == pytest.approx(0.003)


def test_link_tail_drops_beyond_its_queue_and_loses_at_its_rate() -> None:
    spec = LinkSpec(bandwidth_bps=8e6, rtt_s=0.0, queue_s_max=0.0105)  # 10.5 ms = 10.5 kB of queue
    link = EmulatedLink(spec, seed=1)
    arrivals = [link.transmit(0.0, 1000) for _ in range(20)]
    assert arrivals[:11] == [pytest.approx(0.001 * (k + 1)) for k in range(11)]
    assert arrivals[11:] == [None] * 9 and link.chunks_dropped_queue == 9
    lossy = EmulatedLink(LinkSpec(bandwidth_bps=1e9, rtt_s=0.01, loss=0.05), seed=3)
    lost = sum(lossy.transmit(k * 0.01, 1000) is None for k in range(20_000))
    assert 0.04 < lost / 20_000 < 0.06


def test_link_jitter_is_bounded_and_seeded() -> None:
    spec = LinkSpec(bandwidth_bps=1e12, rtt_s=0.1, jitter_s=0.002)
    runs = []
    for _ in range(2):
        link = EmulatedLink(spec, seed=7)
        runs.append([link.transmit(k * 0.01, 1) for k in range(500)])
    assert runs[0] == runs[1]
    delays = [a - k * 0.01 for k, a in enumerate(runs[0])]
    assert all(0.05 <= d <= 0.052 + 1e-9 for d in delays) and max(delays) - min(delays) > 0.0015


# -- token bucket ------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(1000.0, 500.0)
    assert [bucket.reserve(0.0, 250) for _ in range(2)] == [0.0, 0.0]  # the burst
    assert bucket.reserve(0.0, 250) == pytest.approx(0.25)  # then 1000 B/s
    assert bucket.earliest(0.0, 100) == pytest.approx(0.35)
    assert bucket.reserve(10.0, 500) == 10.0  # refilled, but never above the burst
    assert bucket.reserve(10.0, 500) == pytest.approx(10.5)
    with pytest.raises(ConfigError, match="burst"):
        bucket.reserve(11.0, 501)


# -- chunks and acks -------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    {"offset": 10, "msg_len": 5}, {"data": b""}, {"msg_id": -1}, {"sent_at": float("nan")},
    {"data": b"x" * 11, "msg_len": 10}, {"attempt": 1.5},
])
def test_malformed_chunks_are_peer_protocol_errors(fields: dict) -> None:
    good = {"msg_id": 1, "msg_start": 0, "msg_len": 10, "offset": 0, "data": b"x" * 10, "stream": 0,
            "attempt": 0, "sent_at": 0.0}
    with pytest.raises(PeerProtocolError):
        Chunk(**{**good, **fields})


@pytest.mark.parametrize("fields", [
    {"cumulative": -1}, {"sack": ((5, 5),)}, {"sack": ((20, 30), (25, 40))}, {"sack": ((0, 5),)},
    {"echo": ("x",)},
])
def test_malformed_acks_are_peer_protocol_errors(fields: dict) -> None:
    good = {"cumulative": 10, "sack": (), "window_end": 100, "free_bytes": 10, "echo": ()}
    with pytest.raises(PeerProtocolError):
        Ack(**{**good, **fields})


def test_chunks_pickle_without_the_sender_buffer() -> None:
    payload = bytearray(b"0123456789")
    c = Chunk(msg_id=3, msg_start=0, msg_len=10, offset=0, data=memoryview(payload)[:4], stream=1,
              attempt=0, sent_at=0.5)
    for protocol in (4, 5):
        back = pickle.loads(pickle.dumps(c, protocol=protocol))
        assert bytes(back.data) == b"0123" and back.msg_id == 3 and back.sent_at == 0.5
    buffers: list[pickle.PickleBuffer] = []
    blob = pickle.dumps(c, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and b"0123" not in blob  # out of band: no copy in the pickle
    assert bytes(pickle.loads(blob, buffers=buffers).data) == b"0123"


# -- receiver ------------------------------------------------------------------------------


def test_receiver_delivers_in_message_order_whatever_the_chunk_order() -> None:
    r = TransportReceiver(small_config())
    m0 = bytes(range(256)) * 40  # 10240 bytes: chunks at 0, 4096, 8192
    m1 = b"\x07" * 5000
    c0 = [chunk(0, 0, len(m0), o, m0[o:o + CHUNK]) for o in (0, 4096, 8192)]
    c1 = [chunk(1, len(m0), len(m1), o, m1[o:o + CHUNK]) for o in (0, 4096)]
    ack, out = r.on_chunks([c1[1], c0[2], c1[0]], 0.0)
    assert out == [] and ack.cumulative == 0
    assert ack.sack == ((8192, len(m0) + len(m1)),) and len(ack.echo) == 3
    ack, out = r.on_chunks([c0[1]], 0.1)
    assert out == [] and ack.sack == ((4096, len(m0) + len(m1)),)
    ack, out = r.on_chunks([c0[0], c0[0]], 0.2)  # the missing head, and a duplicate of it
    assert out == [(0, m0), (1, m1)]
    assert ack.cumulative == len(m0) + len(m1) and ack.sack == () and r.held_bytes == 0
    assert ack.window_end == len(m0) + len(m1) + r.config.reassembly_bytes_max
    ack, out = r.on_chunks([c0[1]], 0.3)  # late duplicate: acked again, nothing delivered
    assert out == [] and ack.echo[0].start == 4096 and r.chunks_duplicate == 2


def test_receiver_delivers_with_gaps_in_message_ids() -> None:
    r = TransportReceiver(small_config())
    _, out = r.on_chunks([chunk(9, 100, 50, 0), chunk(5, 0, 100, 0)], 0.0)
    assert [m for m, _ in out] == [5, 9]


@pytest.mark.parametrize("bad", [
    chunk(0, 0, 10000, 100, b"x" * 4096),  # offset not on a chunk boundary
    chunk(0, 0, 10000, 0, b"x" * 1000),  # short chunk in the middle of a message
    chunk(0, 0, 200 * KiB, 0),  # message over message_bytes_max
    chunk(7, 0, 10000, 0),  # same start, another id than the known message
    chunk(1, 5000, 10000, 0),  # overlaps the known message [0, 10000)
    chunk(0, 20000, 100, 0),  # a later message with an id that is not larger
])
def test_receiver_rejects_inconsistent_chunks_and_changes_nothing(bad: Chunk) -> None:
    r = TransportReceiver(small_config())
    r.on_chunks([chunk(0, 0, 10000, 4096)], 0.0)
    before = (r.held_bytes, r.held_chunks, r.ack())
    with pytest.raises(PeerProtocolError):
        r.on_chunks([chunk(2, 30000, 100, 0), bad], 0.1)  # a good chunk first: it must not stay
    assert (r.held_bytes, r.held_chunks, r.ack()) == before


def test_receiver_drops_what_does_not_fit_its_window_and_keeps_its_bound() -> None:
    cfg = small_config(reassembly_bytes_max=64 * KiB, inflight_bytes_max=32 * KiB, window_chunks_max=16)
    r = TransportReceiver(cfg)
    msgs = [chunk(i, i * 16 * KiB, 16 * KiB, o) for i in range(1, 6) for o in range(0, 16 * KiB, CHUNK)]
    ack, out = r.on_chunks(msgs, 0.0)  # message 0 [0, 16 KiB) is missing: nothing can be delivered
    assert out == [] and r.held_bytes == 48 * KiB  # messages 1-3 fit below 64 KiB, 4 and 5 do not
    assert r.chunks_dropped == 8 and ack.free_bytes == 16 * KiB and ack.window_end == 64 * KiB
    assert {e.start for e in ack.echo} == {c.start for c in msgs[:12]}  # dropped chunks are not echoed
    _, out = r.on_chunks([chunk(0, 0, 16 * KiB, o) for o in range(0, 16 * KiB, CHUNK)], 1.0)
    assert [m for m, _ in out] == [0, 1, 2, 3] and r.held_bytes == 0


def test_receiver_chunk_bound_never_blocks_the_next_message() -> None:
    cfg = small_config(window_chunks_max=16)
    r = TransportReceiver(cfg)
    later = [chunk(i, i * 64 * KiB, 64 * KiB, o) for i in (1, 2) for o in range(0, 64 * KiB, CHUNK)]
    r.on_chunks(later, 0.0)
    assert r.held_chunks == 16 and r.chunks_dropped == 16  # the bound
    first = [chunk(0, 0, 64 * KiB, o) for o in range(0, 64 * KiB, CHUNK)]
    _, out = r.on_chunks(first, 1.0)  # the first undelivered message always gets in
    assert [m for m, _ in out] == [0, 1] and r.held_chunks == 0


# -- sender -----------------------------------------------------------------------------


def test_sender_round_trip_through_a_receiver() -> None:
    cfg = small_config()
    s, r = TransportSender(cfg, now=0.0), TransportReceiver(cfg)
    s.send(0, b"a" * 10000, 0.0)
    s.send(4, b"b" * 3000, 0.0)
    sent = s.poll(0.0)
    assert [(t, c.offset, len(c.data)) for t, c in sent] == [(0.0, 0, 4096), (0.0, 4096, 4096),
                                                             (0.0, 8192, 1808), (0.0, 0, 3000)]
    assert [c.stream for _, c in sent] == [0, 1, 2, 3] and s.inflight_bytes == 13000
    ack, out = r.on_chunks([c for _, c in reversed(sent)], 0.05)
    assert out == [(0, b"a" * 10000), (4, b"b" * 3000)]
    assert s.on_ack(ack, 0.1) == [0, 4]
    assert s.idle and s.inflight_bytes == 0 and s.buffered_bytes == 0
    assert s.rtt.srtt_s == pytest.approx(0.1) and s.next_wakeup() is None


def test_sender_backpressure_and_local_misuse() -> None:
    cfg = small_config()
    s = TransportSender(cfg, now=0.0)
    assert not s.can_accept(0) and not s.can_accept(cfg.message_bytes_max + 1)
    s.send(1, bytes(64 * KiB), 0.0)
    s.send(2, bytes(64 * KiB), 0.0)
    assert not s.can_accept(1)  # unsent_bytes_max (128 KiB) reached
    with pytest.raises(LocalProtocolError, match="cannot accept"):
        s.send(3, b"x", 0.0)
    with pytest.raises(LocalProtocolError, match="does not increase"):
        s.send(2, b"x", 0.0)
    s.poll(0.0)  # 4 chunks leave; the rest stays unsent
    assert s.unsent_bytes == 128 * KiB - 4 * CHUNK and s.can_accept(4 * CHUNK)
    assert not s.can_accept(4 * CHUNK + 1)


def test_sender_rejects_acks_for_what_it_never_sent_and_changes_nothing() -> None:
    cfg = small_config()
    s = TransportSender(cfg, now=0.0)
    s.send(0, bytes(10000), 0.0)
    s.poll(0.0)
    bad_acks = [
        Ack(cumulative=20000, sack=(), window_end=10**6, free_bytes=0, echo=()),
        Ack(cumulative=100, sack=(), window_end=10**6, free_bytes=0, echo=()),  # not a boundary
        Ack(cumulative=0, sack=((100, 4096),), window_end=10**6, free_bytes=0, echo=()),
        Ack(cumulative=0, sack=(), window_end=10**6, free_bytes=0,
            echo=(Echo(start=0, attempt=3, sent_at=0.0),)),  # a transmission that never happened
        Ack(cumulative=0, sack=(), window_end=10**6, free_bytes=0,
            echo=tuple(Echo(start=0, attempt=0, sent_at=0.0) for _ in range(cfg.ack_echo_max + 1))),
    ]
    for ack in bad_acks:
        with pytest.raises(PeerProtocolError):
            s.on_ack(ack, 0.1)
        assert s.inflight_bytes == 10000 and s.stats().chunks_sent == 3


def test_sender_gives_up_after_chunk_retries_max_with_backed_off_timeouts() -> None:
    cfg = small_config(chunk_retries_max=3)
    s = TransportSender(cfg, now=0.0)
    s.send(0, bytes(100), 0.0)
    times = []
    now = 0.0
    with pytest.raises(RetriesExhausted) as info:
        for _ in range(100):
            for t, c in s.poll(now):
                times.append((t, c.attempt))
            wake = s.next_wakeup()
            assert wake is not None and wake > now
            now = wake
    assert [a for _, a in times] == [0, 1, 2, 3]  # the first transmission and 3 retries
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(times)]
    assert gaps == [pytest.approx(1.0), pytest.approx(2.0), pytest.approx(4.0)]  # RFC 6298 backoff
    assert info.value.attempts == 4 and info.value.msg_id == 0
    with pytest.raises(RetriesExhausted):  # failed for good
        s.poll(now + 100)
    assert not s.can_accept(1)
