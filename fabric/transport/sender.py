"""The sending endpoint of AMST: chunking, windows, pacing, rate limit, retransmission.

Sans-IO: the shell hands in messages (`send`), acks (`on_ack`) and the time,
and takes out chunks with their departure times (`poll`). Nothing here
sleeps, reads a clock or draws a random number.

How a chunk may leave (checked in this order, every poll):
1. retransmissions first, lowest stream offset first (it blocks in-order delivery);
2. new data only below the receiver's `window_end` and within `window_chunks_max`;
3. the pipe (bytes sent, not acked and not deemed lost) stays within cwnd =
   cwnd_gain x bandwidth x min RTT + cwnd_min, capped by `inflight_bytes_max`;
4. chunks leave paced at pacing_gain x bandwidth, and no faster than the token bucket;
   `poll` books departures up to `pacing_horizon_s` ahead.

Loss, by RACK-TLP (RFC 8985), since chunks on several streams and a jittery
path arrive out of order: a transmission is lost once one sent after it has
been delivered and a reordering window (min RTT / 4, grown on each spurious
loss, at most SRTT) has passed beyond that one's RTT. When nothing is acked
for two SRTTs, a tail-loss probe resends the newest chunk in flight, so a
lost last chunk or lost retransmission is found without waiting for the
retransmission timeout. The RTO (RFC 6298: restarted on every ack of new
data, doubled on each expiry) is the last resort and marks everything in
flight lost. A chunk that needs more than `chunk_retries_max`
retransmissions fails the sender with `RetriesExhausted`.

Bandwidth and RTT come from the transfer itself (see `estimator`): the
first window, sent back-to-back, is a probe train unless a `ProbeResult`
from a setup probe is given.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from fabric.transport.chunks import Ack, Chunk
from fabric.transport.config import TransportConfig
from fabric.transport.errors import LocalProtocolError, PeerProtocolError, RetriesExhausted
from fabric.transport.estimator import BandwidthEstimator, ProbeResult, RttEstimator, estimate_from_train
from fabric.transport.mode import Mode, ModeDetector
from fabric.transport.ratelimit import TokenBucket

_LIVE, _ACKED, _LOST = 0, 1, 2
# RFC 8985 6.2: the reordering window starts at min_RTT / 4 and is never more
# than SRTT; each spurious loss adds one more quarter, up to this many.
REO_WND_MULT_MAX = 64
# RFC 8985 7.2: the probe timeout is 2 x SRTT (there are no delayed acks here).
PTO_SRTT_FACTOR = 2.0


class _Message:
    __slots__ = ("first_sent", "length", "msg_id", "payload", "start")

    def __init__(self, msg_id: int, start: int, payload: memoryview) -> None:
        self.msg_id = msg_id
        self.start = start
        self.length = len(payload)
        self.payload = payload
        self.first_sent = 0  # bytes of it sent at least once


class _Chunk:
    __slots__ = ("acked", "length", "lost", "msg", "start", "stream", "txs")

    def __init__(self, msg: _Message, start: int, length: int, stream: int) -> None:
        self.msg = msg
        self.start = start  # stream offset
        self.length = length
        self.stream = stream
        self.txs: list[_Tx] = []  # one per transmission; index = attempt
        self.acked = False
        self.lost = False  # waiting in the retransmission queue


class _Tx:
    """One transmission of a chunk, with the delivery-rate bookkeeping of its departure."""

    __slots__ = ("app_limited", "attempt", "by_timer", "chunk", "delivered", "delivered_time",
                 "first_sent_time", "order", "sent_at", "state")

    def __init__(self, chunk: _Chunk, attempt: int, sent_at: float, order: int, delivered: int,
                 delivered_time: float, first_sent_time: float, app_limited: bool) -> None:
        self.chunk = chunk
        self.attempt = attempt
        self.sent_at = sent_at
        self.order = order  # departure order; breaks ties between equal departure times
        self.delivered = delivered
        self.delivered_time = delivered_time
        self.first_sent_time = first_sent_time
        self.app_limited = app_limited
        self.state = _LIVE
        self.by_timer = False  # declared lost by the RTO or resent as a tail-loss probe


@dataclass(frozen=True, kw_only=True)
class TransportStats:
    """A JSON-ready snapshot of a sender, for progress and the migration report."""

    mode: str | None
    bandwidth_bytes_per_s: float | None
    rtt_s: float | None  # path RTT estimate (chunk serialization removed)
    min_rtt_s: float | None  # smallest chunk RTT seen
    srtt_s: float | None
    rto_s: float
    cwnd_bytes: float
    inflight_bytes: int
    buffered_bytes: int
    probe_bandwidth_bytes_per_s: float | None
    rounds: int
    bytes_sent: int  # including retransmissions
    bytes_retransmitted: int
    chunks_sent: int
    chunks_retransmitted: int
    losses_detected: int  # by RACK (a later chunk was delivered)
    tail_loss_probes: int
    rto_expiries: int
    spurious_retransmissions: int
    messages_acked: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class TransportSender:
    """One migration's outgoing transfer. See the module docstring for the rules."""

    def __init__(self, config: TransportConfig, *, now: float, probe: ProbeResult | None = None,
                 mode_detector: ModeDetector | None = None) -> None:
        self.config = config.validate()
        self.estimator = BandwidthEstimator(bw_window_rounds=config.bw_window_rounds,
                                            min_rtt_window_s=config.min_rtt_window_s)
        self.rtt = RttEstimator(rto_s_initial=config.rto_s_initial, rto_s_min=config.rto_s_min,
                                rto_s_max=config.rto_s_max)
        self.mode_detector = mode_detector or ModeDetector()
        cap = config.max_bandwidth_bytes_per_s
        burst = config.rate_limit_burst_bytes
        self._bucket = TokenBucket(cap, burst, now=now) if cap is not None and burst is not None else None
        # messages
        self._msgs: deque[_Message] = deque()  # every message not yet cumulatively acked
        self._unsent: deque[_Message] = deque()  # those with bytes never sent
        self._buffered_bytes = 0
        self._unsent_bytes = 0
        self._stream_end = 0  # where the next message starts
        self._last_msg_id = -1
        # chunks and transmissions
        self._chunks: dict[int, _Chunk] = {}  # by stream offset: sent, not cumulatively acked
        self._chunk_order: deque[int] = deque()  # their offsets, ascending
        self._retx: list[int] = []  # heap of offsets of chunks deemed lost
        self._txs: deque[_Tx] = deque()  # transmissions in departure order, from the oldest live one
        self._tx_order = 0
        self._next_stream = 0
        self._inflight_bytes = 0
        self._sent_end = 0  # stream offset past the highest byte sent
        self._cum = 0  # cumulative ack
        self._window_end = config.reassembly_bytes_max  # until the receiver says otherwise
        # delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation)
        self._delivered = 0
        self._delivered_time = now
        self._first_sent_time = now
        self._app_limited_until = 0
        self._round_count = 0
        self._next_round_delivered = 0
        # RACK-TLP (RFC 8985)
        self._rack_xmit: tuple[float, int] = (float("-inf"), -1)  # newest delivered (sent_at, order)
        self._rack_rtt = 0.0
        self._reo_wnd_mult = 1
        self._reorder_deadline: float | None = None
        self._pto_anchor = now
        self._tlp_in_flight = False
        # pacing and timers
        self._last_departure = now
        self._last_length = 0
        self._rto_anchor = now
        self._rto_backoff = 0
        self._after_rto = False
        # the probe train: the first window, when no setup probe was given
        self._probe_open = probe is None
        self._probe_waiting = False
        self._probe: dict[int, list[Any]] = {}  # offset -> [size, sent_at, acked_at]
        if probe is not None:
            self._seed(probe, now)
        self._now = now  # the latest time seen in any input
        # failure
        self._failed: RetriesExhausted | None = None
        self._exhausted: _Chunk | None = None
        # counters
        self._bytes_sent = 0
        self._bytes_retransmitted = 0
        self._chunks_sent = 0
        self._chunks_retransmitted = 0
        self._losses_detected = 0
        self._tail_loss_probes = 0
        self._rto_expiries = 0
        self._spurious = 0
        self._messages_acked = 0

    # -- state for the shell and for checks -------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes of messages accepted and not yet acknowledged (bounded by send_buffer_bytes_max)."""
        return self._buffered_bytes

    @property
    def unsent_bytes(self) -> int:
        """Bytes accepted but never sent."""
        return self._unsent_bytes

    @property
    def inflight_bytes(self) -> int:
        """Bytes sent, not acknowledged, not deemed lost (bounded by the cwnd)."""
        return self._inflight_bytes

    @property
    def outstanding_chunks(self) -> int:
        """Chunks sent and not cumulatively acknowledged (bounded by window_chunks_max)."""
        return len(self._chunks)

    @property
    def idle(self) -> bool:
        """Every accepted message is acknowledged."""
        return not self._msgs

    @property
    def mode(self) -> Mode | None:
        """The link's mode by the measurements so far (None before the first)."""
        return self.mode_detector.mode

    def cwnd_bytes(self) -> float:
        """The congestion window: gain x estimated BDP + cwnd_min, at most inflight_bytes_max."""
        cfg = self.config
        bdp = self.estimator.bdp_bytes()
        if self._after_rto or bdp is None or self._probe_waiting:
            return float(cfg.cwnd_min_bytes)
        # + cwnd_min, not max(): the endpoints' processing (a call queued behind the
        # receiver's work, chunks grouped per call) delays acks by more than the
        # min RTT shows; with the window at exactly 1.25 BDP that delay, not the
        # link, set the rate on Ray (0.55 of a 1 Gbit/s link at 0.25 ms RTT).
        return min(float(cfg.inflight_bytes_max), cfg.cwnd_gain * bdp + cfg.cwnd_min_bytes)

    def pacing_rate_bytes_per_s(self) -> float | None:
        """The pacing rate, or None (unpaced: the probe train) until the probe has an estimate."""
        bw = self.estimator.bandwidth_bytes_per_s
        return None if bw is None or self._probe_waiting else self.config.pacing_gain * bw

    def stats(self) -> TransportStats:
        """Counters and estimates, JSON-ready via `to_dict()`."""
        est = self.estimator
        return TransportStats(
            mode=None if self.mode is None else self.mode.value,
            bandwidth_bytes_per_s=est.bandwidth_bytes_per_s, rtt_s=est.rtt_s, min_rtt_s=est.min_rtt_s,
            srtt_s=self.rtt.srtt_s, rto_s=self.rtt.rto_s, cwnd_bytes=self.cwnd_bytes(),
            inflight_bytes=self._inflight_bytes, buffered_bytes=self._buffered_bytes,
            probe_bandwidth_bytes_per_s=est.probe.bandwidth_bytes_per_s if est.probe else None,
            rounds=self._round_count, bytes_sent=self._bytes_sent,
            bytes_retransmitted=self._bytes_retransmitted, chunks_sent=self._chunks_sent,
            chunks_retransmitted=self._chunks_retransmitted, losses_detected=self._losses_detected,
            tail_loss_probes=self._tail_loss_probes, rto_expiries=self._rto_expiries,
            spurious_retransmissions=self._spurious, messages_acked=self._messages_acked)

    # -- inputs -------------------------------------------------------------------

    def can_accept(self, size: int) -> bool:
        """Whether `send()` of a message of `size` bytes would be accepted now (backpressure)."""
        cfg = self.config
        return (self._failed is None and 1 <= size <= cfg.message_bytes_max
                and self._buffered_bytes + size <= cfg.send_buffer_bytes_max
                and self._unsent_bytes + size <= cfg.unsent_bytes_max)

    def send(self, msg_id: int, payload: bytes | bytearray | memoryview, now: float) -> None:
        """Queue a message; the sender keeps a reference to `payload` until it is acked."""
        self._raise_if_failed()
        view = memoryview(payload).cast("B")
        if type(msg_id) is not int or msg_id <= self._last_msg_id:
            raise LocalProtocolError(f"message id {msg_id!r} does not increase (last {self._last_msg_id})")
        if not self.can_accept(len(view)):
            raise LocalProtocolError(
                f"cannot accept a {len(view)}-byte message: buffered {self._buffered_bytes}/"
                f"{self.config.send_buffer_bytes_max}, unsent {self._unsent_bytes}/"
                f"{self.config.unsent_bytes_max}, message_bytes_max {self.config.message_bytes_max}")
        msg = _Message(msg_id, self._stream_end, view)
        self._last_msg_id = msg_id
        self._stream_end += msg.length
        self._msgs.append(msg)
        self._unsent.append(msg)
        self._buffered_bytes += msg.length
        self._unsent_bytes += msg.length

    def poll(self, now: float) -> list[tuple[float, Chunk]]:
        """Chunks that may leave, each with its departure time (now <= t <= now + pacing_horizon_s)."""
        self._raise_if_failed()
        self._now = max(self._now, now)
        self._check_timers(now)
        self._raise_if_failed()
        cfg = self.config
        cwnd = self.cwnd_bytes()
        rate = self.pacing_rate_bytes_per_s()
        horizon = now + cfg.pacing_horizon_s
        out: list[tuple[float, Chunk]] = []
        while True:
            pick = self._pick()
            if pick is None:
                if not self._unsent and not self._retx and self._inflight_bytes < cwnd:
                    # Nothing to send: rate samples until this data is acked are app-limited.
                    self._app_limited_until = max(self._delivered + self._inflight_bytes, 1)
                break
            length = pick.length if isinstance(pick, _Chunk) else self._new_chunk_length(pick)
            if self._inflight_bytes > 0 and self._inflight_bytes + length > cwnd:
                break
            depart = max(now, self._paced_departure(rate))
            if self._bucket is not None:
                depart = self._bucket.earliest(depart, length)
            if depart > horizon:
                break
            if self._bucket is not None:
                self._bucket.reserve(depart, length)
            out.append((depart, self._transmit(pick, depart)))
            self._last_departure, self._last_length = depart, length
        if out and self._probe_open:
            # The train is what the first poll sent, back-to-back; until its acks
            # are in, the window stays at cwnd_min and nothing is paced.
            self._probe_open = False
            self._probe_waiting = True
        return out

    def on_ack(self, ack: Ack, now: float) -> list[int]:
        """Process an ack; the ids of messages now fully acknowledged, in order.

        Raises PeerProtocolError (before changing anything) for an ack no
        correct receiver sends.
        """
        self._raise_if_failed()
        cfg = self.config
        if len(ack.echo) > cfg.ack_echo_max or len(ack.sack) > cfg.sack_ranges_max:
            raise PeerProtocolError(f"ack with {len(ack.echo)} echoes and {len(ack.sack)} sack ranges "
                                    f"exceeds ack_echo_max={cfg.ack_echo_max} / "
                                    f"sack_ranges_max={cfg.sack_ranges_max}")
        newly = self._validate_ack(ack)
        self._now = max(self._now, now)
        newest: _Tx | None = None  # the newest-sent live transmission acked, for the rate sample
        arrived: dict[int, int] = {}  # chunk offset -> the attempt that arrived
        for echo in ack.echo:
            ch = self._chunks.get(echo.start)
            if ch is None:
                continue
            tx = ch.txs[echo.attempt]
            if not ch.acked:
                arrived[ch.start] = echo.attempt
                if tx.sent_at <= now:
                    sample = now - tx.sent_at
                    self.rtt.on_sample(sample)
                    self.estimator.on_rtt_sample(sample, ch.length, now)
                    self._rto_backoff = 0  # a fresh RTT sample (RFC 6298 5.7)
            if tx.state == _LOST and not tx.by_timer:
                # A transmission RACK declared lost arrived: reordering, not loss.
                tx.state = _ACKED  # counted once; it left the pipe when it was declared lost
                self._spurious += 1
                self._reo_wnd_mult = min(REO_WND_MULT_MAX, self._reo_wnd_mult + 1)
        for ch in newly:
            attempt = arrived.get(ch.start)
            if attempt is None and len(ch.txs) == 1:
                attempt = 0  # only one transmission, so no ambiguity
            live = self._ack_chunk(ch, now)
            if attempt is not None:
                tx = ch.txs[attempt]
                if (tx.sent_at, tx.order) > self._rack_xmit:
                    self._rack_xmit = (tx.sent_at, tx.order)
                    self._rack_rtt = max(0.0, now - tx.sent_at)
            if live is not None and (newest is None or live.order > newest.order):
                newest = live
        if newly:
            self._after_rto = False
            self._tlp_in_flight = False
            self._rto_anchor = self._pto_anchor = now
        if newest is not None:
            self._rate_sample(newest)
        self._rack_detect(now)
        self._window_end = max(self._window_end, ack.window_end)
        acked = self._advance_cumulative(ack.cumulative)
        if self._app_limited_until and self._delivered > self._app_limited_until:
            self._app_limited_until = 0
        return acked

    def next_wakeup(self) -> float | None:
        """When `poll` has something to do without a new input (a timeout or a paced departure)."""
        if self._failed is not None or self._exhausted is not None:
            return self._now
        times = [t for t in (self._rto_deadline(), self._pto_deadline(), self._reorder_deadline)
                 if t is not None]
        wake = min(times) if times else None
        pick = self._pick()
        if pick is not None:
            length = pick.length if isinstance(pick, _Chunk) else self._new_chunk_length(pick)
            if self._inflight_bytes == 0 or self._inflight_bytes + length <= self.cwnd_bytes():
                t = self._paced_departure(self.pacing_rate_bytes_per_s())
                if self._bucket is not None:
                    t = self._bucket.earliest(t, length)
                t -= self.config.pacing_horizon_s
                wake = t if wake is None else min(wake, t)
        return wake

    # -- sending --------------------------------------------------------------------

    def _pick(self) -> _Chunk | _Message | None:
        """The next thing to send: a lost chunk, or the message with unsent bytes; None if blocked."""
        while self._retx:
            ch = self._chunks.get(self._retx[0])
            if ch is not None and ch.lost and not ch.acked:
                return ch
            heapq.heappop(self._retx)
        if not self._unsent:
            return None
        msg = self._unsent[0]
        start = msg.start + msg.first_sent
        if start + self._new_chunk_length(msg) > self._window_end:
            return None  # the receiver's window
        if len(self._chunks) >= self.config.window_chunks_max:
            return None
        return msg

    def _paced_departure(self, rate: float | None) -> float:
        """The previous departure plus its chunk's time at the current pacing rate."""
        return self._last_departure + (self._last_length / rate if rate else 0.0)

    def _new_chunk_length(self, msg: _Message) -> int:
        return min(self.config.chunk_bytes, msg.length - msg.first_sent)

    def _transmit(self, pick: _Chunk | _Message, depart: float) -> Chunk:
        if isinstance(pick, _Chunk):
            ch = pick
            heapq.heappop(self._retx)
            ch.lost = False
            self._bytes_retransmitted += ch.length
            self._chunks_retransmitted += 1
        else:
            msg = pick
            length = self._new_chunk_length(msg)
            ch = _Chunk(msg, msg.start + msg.first_sent, length, self._next_stream)
            self._next_stream = (self._next_stream + 1) % self.config.streams
            msg.first_sent += length
            self._unsent_bytes -= length
            if msg.first_sent == msg.length:
                self._unsent.popleft()
            self._chunks[ch.start] = ch
            self._chunk_order.append(ch.start)
            self._sent_end = ch.start + length
            if self._probe_open:
                self._probe[ch.start] = [length, depart, None]
        if self._inflight_bytes == 0:
            # Nothing in flight: rate intervals and the retransmission timer start here.
            self._first_sent_time = self._delivered_time = depart
            self._rto_anchor = depart
        self._pto_anchor = max(self._pto_anchor, depart)
        tx = _Tx(ch, len(ch.txs), depart, self._tx_order, self._delivered, self._delivered_time,
                 self._first_sent_time, self._app_limited_until > 0)
        self._tx_order += 1
        ch.txs.append(tx)
        self._inflight_bytes += ch.length
        self._txs.append(tx)
        self._bytes_sent += ch.length
        self._chunks_sent += 1
        msg = ch.msg
        moff = ch.start - msg.start
        return Chunk(msg_id=msg.msg_id, msg_start=msg.start, msg_len=msg.length, offset=moff,
                     data=msg.payload[moff:moff + ch.length], stream=ch.stream, attempt=tx.attempt,
                     sent_at=depart)

    # -- acks -------------------------------------------------------------------------

    def _validate_ack(self, ack: Ack) -> list[_Chunk]:
        """Check an ack against what was sent; the chunks it newly acknowledges. Changes nothing."""
        ack.check()
        if ack.cumulative > self._sent_end or (ack.sack and ack.sack[-1][1] > self._sent_end):
            raise PeerProtocolError(f"ack covers up to {max([ack.cumulative, *(e for _, e in ack.sack)])}, "
                                    f"beyond the {self._sent_end} bytes sent")
        newly: list[_Chunk] = []
        if ack.cumulative > self._cum:
            if ack.cumulative != self._sent_end and ack.cumulative not in self._chunks:
                raise PeerProtocolError(f"cumulative ack {ack.cumulative} is not a chunk boundary")
            for start in self._chunk_order:
                if start >= ack.cumulative:
                    break
                ch = self._chunks[start]
                if not ch.acked:
                    newly.append(ch)
        for s, e in ack.sack:
            s = max(s, self._cum, ack.cumulative)
            while s < e:
                ch = self._chunks.get(s)
                if ch is None or ch.start + ch.length > e:
                    raise PeerProtocolError(f"sack range ({s}, {e}) does not follow chunk boundaries")
                if not ch.acked:
                    newly.append(ch)
                s = ch.start + ch.length
        for echo in ack.echo:
            if echo.start >= self._sent_end:
                raise PeerProtocolError(f"echo of a chunk at {echo.start}, beyond what was sent")
            ch = self._chunks.get(echo.start)
            if ch is None:
                continue  # acknowledged and forgotten already: a late or duplicate ack
            if echo.attempt >= len(ch.txs):
                raise PeerProtocolError(f"echo of transmission {echo.attempt} of the chunk at "
                                        f"{echo.start}, which was sent {len(ch.txs)} times")
            if not ch.acked:
                newly.append(ch)
        # A chunk may be named by several parts of one ack; keep the first.
        seen: set[int] = set()
        return [ch for ch in newly if not (ch.start in seen or seen.add(ch.start))]

    def _ack_chunk(self, ch: _Chunk, now: float) -> _Tx | None:
        """Mark a chunk delivered; its live transmission (for the rate sample), if any."""
        assert not ch.acked
        ch.acked = True
        ch.lost = False
        self._delivered += ch.length
        self._delivered_time = now
        tx = ch.txs[-1]
        if self._probe and ch.start in self._probe and self._probe[ch.start][2] is None:
            self._probe[ch.start][2] = now
            self._maybe_finish_probe(now)
        if tx.state == _LIVE:
            tx.state = _ACKED
            self._inflight_bytes -= ch.length
            assert self._inflight_bytes >= 0
            return tx
        return None

    def _rate_sample(self, tx: _Tx) -> None:
        """One delivery-rate sample from the newest-sent transmission this ack covered."""
        self._first_sent_time = tx.sent_at
        if tx.delivered >= self._next_round_delivered:
            self._next_round_delivered = self._delivered
            self._round_count += 1
            self.estimator.on_round(self._round_count)
            self._update_mode()
        send_elapsed = tx.sent_at - tx.first_sent_time
        ack_elapsed = self._delivered_time - tx.delivered_time
        interval = max(send_elapsed, ack_elapsed)
        min_rtt = self.estimator.min_rtt_s
        if interval <= 0 or (min_rtt is not None and interval < min_rtt):
            return  # shorter than a round trip: ack compression would inflate it
        self.estimator.on_rate_sample((self._delivered - tx.delivered) / interval,
                                      app_limited=tx.app_limited)

    def _reo_wnd(self) -> float:
        """RFC 8985 6.2: min_RTT / 4 per step, at most SRTT."""
        min_rtt, srtt = self.estimator.min_rtt_s, self.rtt.srtt_s
        if min_rtt is None or srtt is None:
            return 0.0
        return min(self._reo_wnd_mult * min_rtt / 4, srtt)

    def _rack_detect(self, now: float) -> None:
        """RFC 8985 6.2: lost if sent before the newest delivered and overdue by the reordering window."""
        self._drop_dead_head()
        reo_wnd = self._reo_wnd()
        deadline: float | None = None
        for tx in self._txs:
            if (tx.sent_at, tx.order) >= self._rack_xmit:
                break
            if tx.state != _LIVE:
                continue
            due = tx.sent_at + self._rack_rtt + reo_wnd
            if due <= now:
                self._mark_lost(tx, by_timer=False)
                self._losses_detected += 1
            elif deadline is None or due < deadline:
                deadline = due
        self._reorder_deadline = deadline

    def _mark_lost(self, tx: _Tx, *, by_timer: bool) -> None:
        assert tx.state == _LIVE
        tx.state = _LOST
        tx.by_timer = by_timer
        ch = tx.chunk
        self._inflight_bytes -= ch.length
        assert self._inflight_bytes >= 0
        if ch.acked:
            return
        ch.lost = True
        heapq.heappush(self._retx, ch.start)
        if self._probe and ch.start in self._probe:
            self._probe[ch.start][2] = -1.0  # never timed
            self._maybe_finish_probe(self._now)
        if len(ch.txs) > self.config.chunk_retries_max and self._exhausted is None:
            self._exhausted = ch

    def _advance_cumulative(self, cumulative: int) -> list[int]:
        if cumulative <= self._cum:
            return []
        self._cum = cumulative
        while self._chunk_order and self._chunk_order[0] < cumulative:
            ch = self._chunks.pop(self._chunk_order.popleft())
            assert ch.acked and ch.start + ch.length <= cumulative
        acked: list[int] = []
        while self._msgs and self._msgs[0].start + self._msgs[0].length <= cumulative:
            msg = self._msgs.popleft()
            self._buffered_bytes -= msg.length
            acked.append(msg.msg_id)
        self._messages_acked += len(acked)
        return acked

    # -- timers, probe, mode ------------------------------------------------------------

    def _drop_dead_head(self) -> None:
        while self._txs and self._txs[0].state != _LIVE:
            self._txs.popleft()

    def _rto_deadline(self) -> float | None:
        if self._inflight_bytes == 0:
            return None
        rto = min(self.config.rto_s_max, self.rtt.rto_s * (2 ** self._rto_backoff))
        return self._rto_anchor + rto

    def _pto_deadline(self) -> float | None:
        srtt = self.rtt.srtt_s
        if self._inflight_bytes == 0 or self._tlp_in_flight or srtt is None:
            return None
        return self._pto_anchor + PTO_SRTT_FACTOR * srtt

    def _check_timers(self, now: float) -> None:
        if self._reorder_deadline is not None and now >= self._reorder_deadline:
            self._rack_detect(now)
        rto = self._rto_deadline()
        if rto is not None and now >= rto:
            # RFC 6298 5.4-5.6 with RFC 6675's view: everything in flight is lost.
            self._rto_expiries += 1
            for tx in self._txs:
                if tx.state == _LIVE:
                    self._mark_lost(tx, by_timer=True)
            self._txs.clear()
            self._reorder_deadline = None
            self._rto_backoff = min(self._rto_backoff + 1, 64)
            self._rto_anchor = now
            self._after_rto = True
            return
        pto = self._pto_deadline()
        if pto is not None and now >= pto:
            # RFC 8985 7.3: resend the newest chunk in flight to draw an ack
            # that lets RACK see any other loss; then the RTO runs again.
            newest = next(tx for tx in reversed(self._txs) if tx.state == _LIVE)
            self._mark_lost(newest, by_timer=True)
            self._tail_loss_probes += 1
            self._tlp_in_flight = True
            self._rto_anchor = now

    def _raise_if_failed(self) -> None:
        if self._failed is None and self._exhausted is not None:
            ch = self._exhausted
            self._failed = RetriesExhausted(
                f"chunk at offset {ch.start - ch.msg.start} of message {ch.msg.msg_id} was lost "
                f"{len(ch.txs)} times (chunk_retries_max={self.config.chunk_retries_max}): the path "
                f"is not delivering", msg_id=ch.msg.msg_id, offset=ch.start - ch.msg.start,
                attempts=len(ch.txs))
        if self._failed is not None:
            raise self._failed

    def _maybe_finish_probe(self, now: float) -> None:
        if self._probe_open or any(v[2] is None for v in self._probe.values()):
            return
        train = list(self._probe.values())
        self._probe = {}
        self._probe_waiting = False
        result = estimate_from_train([v[0] for v in train], [v[1] for v in train],
                                     [v[2] if v[2] is not None and v[2] >= 0 else None for v in train])
        if result is not None:
            self._seed(result, now)
        elif self.estimator.bandwidth_bytes_per_s is None:
            self._probe_open = True  # too few timed acks: the next window is a train again

    def _seed(self, probe: ProbeResult, now: float) -> None:
        self.estimator.seed(probe, now)
        self._update_mode()

    def _update_mode(self) -> None:
        if self._probe_open or self._probe_waiting:
            return  # classify from the probe's estimate, not from the first acks
        bw, rtt = self.estimator.bandwidth_bytes_per_s, self.estimator.rtt_s
        if bw is not None and rtt is not None:
            self.mode_detector.classify(rtt, bw * 8)
