"""One deterministic simulated run: `run(config, seed, faults) -> RunResult`.

A virtual clock and a priority queue of events (deliver a message, tick a
replica or a client, crash, restart, heal), ordered by (time, insertion
number), so ties break the same way every time. All randomness comes from
generators seeded by (seed, purpose), never from hash() or the wall clock:
the same seed and code replay the same run, event for event (`trace_digest`).

Replicas are driven through the sans-IO interface only: their Ready is
persisted to in-memory storage before its messages go on the network. Clients
are ConsensusClient cores issuing random ledger operations against what they
last saw; their calls and returns form the history the checkers judge.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fabric.consensus.api import EMPTY_READY, ClientReply, NodeId, Request
from fabric.consensus.client import ClientConfig, ClientOutput, ConsensusClient
from fabric.consensus.errors import ConsensusError
from fabric.consensus.registry import ClusterParams, get_protocol
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine, ReadVm
from fabric.ledger.state import (
    AbortMigration,
    BeginMigration,
    CommitMigration,
    Outcome,
    RegisterVm,
    RemoveVm,
    VmRecord,
)
from fabric.sim.byzantine import Behaviour, ByzantineContext, make_behaviour
from fabric.sim.checker import (
    HistoryOp,
    check_fencing,
    check_linearizable,
    check_prefixes,
    check_single_owner,
)
from fabric.sim.faults import Faults, Partition

# Protocol settings for simulated runs: short timeouts so that a run of a few
# virtual seconds sees elections and view changes, and small snapshot and
# checkpoint intervals so that runs of a dozen operations exercise compaction,
# snapshot installation, garbage collection and state transfer.
SIM_OPTIONS: dict[str, dict[str, Any]] = {
    "raft": {"election_ms": 150, "heartbeat_ms": 30, "snapshot_entries": 6, "entries_per_msg_max": 8,
             "inflight_msgs_max": 4},
    "pbft": {"checkpoint_interval": 4, "watermark_window": 8, "request_timeout_ms": 300,
             "view_change_timeout_ms": 300, "view_change_backoff_max": 3, "resend_ms": 150, "batch_max": 8,
             "pipeline_max": 2},
    "probft": {"checkpoint_interval": 4, "watermark_window": 8, "request_timeout_ms": 300,
               "view_change_timeout_ms": 300, "view_change_backoff_max": 3, "resend_ms": 150, "batch_max": 8,
               "pipeline_max": 2, "history_max": 64},
    "tpbft": {"checkpoint_interval": 4, "watermark_window": 8, "request_timeout_ms": 300,
              "view_change_timeout_ms": 300, "view_change_backoff_max": 3, "resend_ms": 150, "batch_max": 8,
              "pipeline_max": 2, "epoch_length": 8},
    "bullshark": {"batch_max": 8, "leader_timeout_ms": 200, "resend_ms": 150, "gc_depth": 12,
                  "checkpoint_anchors": 4},
}
# ACP runs the other protocols' replicas, with their simulation settings.
SIM_OPTIONS["acp"] = {"resend_ms": 150, "protocol_options": {p: dict(o) for p, o in SIM_OPTIONS.items()}}
SIM_REPLICAS = {"raft": 3, "pbft": 4, "probft": 4, "tpbft": 4, "bullshark": 4, "acp": 4}
# After the heal, every operation must complete within this (virtual) time. Raft:
# a few election timeouts plus client backoff; PBFT: a few view changes with
# backoff capped at 2**3 * 300 ms, plus client backoff; ProBFT like PBFT.
LIVENESS_MS = {"raft": 4_000, "pbft": 10_000, "probft": 10_000, "tpbft": 10_000, "bullshark": 10_000,
               "acp": 10_000}
EVENTS_MAX = 400_000
RAISED = "a replica raised"  # how a core that raised is reported: a local bug, never a measured result
_NEVER = 1 << 62  # a run that needs more is stuck in a loop: reported as a liveness failure

(_DELIVER, _TICK, _CLIENT_TICK, _CLIENT_NEXT, _CRASH, _RESTART, _HEAL, _ISOLATE, _ABANDON, _RECONF,
 _MODE) = range(11)
RECONF_RETRY_MS = 30  # a membership change no leader accepted yet is tried again this much later


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The shape of a run (faults apart); `validate()` says how to fix a bad value."""

    protocol: str
    n: int | None = None  # None: SIM_REPLICAS[protocol]
    clients: int = 2
    ops_per_client: int = 5
    vms: int = 2
    nodes: tuple[str, ...] = ("dc1", "dc2", "dc3")
    # Think time between a client's operations: spread over the faulty period.
    think_ms_max: int = 300
    # Before the heal a client abandons an operation after this long and moves on
    # (its outcome stays unknown, as a Jepsen client's timed-out op): a client cut off
    # with a deposed leader keeps issuing operations instead of waiting for the heal.
    # From the heal on, operations wait: that is the liveness check.
    op_timeout_ms: int = 400
    liveness_ms: int | None = None  # None: LIVENESS_MS[protocol]
    signatures: str = "hmac"
    options: dict[str, Any] = field(default_factory=dict)
    # Start from SIM_OPTIONS (short timeouts, frequent snapshots and checkpoints);
    # False runs the protocol's production defaults (the benchmark does).
    sim_options: bool = True
    client: ClientConfig = field(default_factory=ClientConfig)
    events_max: int = EVENTS_MAX
    # (at_ms, mode): the link mode changes then, and every live replica is told (ACP switches
    # protocol; protocols without modes ignore it).
    mode_changes: tuple[tuple[int, str], ...] = ()
    # "random": ledger operations of every kind on shared VMs; "migrations": each client
    # migrates its own VMs step by step (_MigrationStream).
    workload: str = "random"
    # Service time of every message a replica takes (microseconds, FIFO per replica; 0: free).
    # The benchmark's model of a replica's CPU: verifying and handling a message is not free,
    # so a protocol that makes each replica handle more messages per decision saturates sooner.
    cpu_us_per_message: int = 0

    def validate(self) -> RunConfig:
        """Return self, or raise ConfigError."""
        get_protocol(self.protocol)
        if self.n is not None and not 1 <= self.n <= 256:
            raise ConfigError(f"run n={self.n}: use 1..256 replicas")
        if not 1 <= self.clients <= 4096 or not 0 <= self.ops_per_client <= 10_000:
            raise ConfigError("run clients must be 1..4096 and ops_per_client 0..10000")
        if not 1 <= self.vms <= 1000 or len(self.nodes) < 2:
            raise ConfigError("run vms must be 1..1000, with at least two nodes to migrate between")
        if not 0 <= self.think_ms_max <= 600_000 or not 1 <= self.events_max <= 100_000_000:
            raise ConfigError("run think_ms_max must be 0..600000 and events_max 1..100000000")
        if not 1 <= self.op_timeout_ms <= 3_600_000:
            raise ConfigError(f"run op_timeout_ms={self.op_timeout_ms}: use 1..3600000")
        if self.signatures not in ("hmac", "ed25519"):
            raise ConfigError("run signatures: use hmac or ed25519")
        if not 0 <= self.cpu_us_per_message <= 1_000_000:
            raise ConfigError(f"run cpu_us_per_message={self.cpu_us_per_message}: use 0..1000000")
        if self.workload not in ("random", "migrations"):
            raise ConfigError(f"run workload={self.workload!r}: use random or migrations")
        for at_ms, mode in self.mode_changes:
            if not 0 <= at_ms <= 3_600_000 or mode not in ("datacenter", "internet", "hybrid"):
                raise ConfigError(f"run mode change ({at_ms}, {mode!r}): use 0..3600000 ms and "
                                  "datacenter, internet or hybrid")
        self.client.validate()
        return self

    @property
    def replicas(self) -> int:
        """n, defaulted."""
        return self.n if self.n is not None else SIM_REPLICAS.get(self.protocol, 3)

    @property
    def liveness_bound_ms(self) -> int:
        """The liveness bound, defaulted."""
        return self.liveness_ms if self.liveness_ms is not None else LIVENESS_MS.get(self.protocol, 10_000)


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What one run did and what the checkers found."""

    protocol: str
    seed: int
    n: int
    faults: dict[str, int]
    ops_invoked: int
    ops_completed: int
    ops_gave_up: int
    ops_abandoned: int
    safety_violations: tuple[str, ...]
    liveness_failures: tuple[str, ...]
    inconclusive: int
    messages: int  # replica-to-replica messages sent
    decisions: int  # client operations completed with a result
    virtual_ms: int
    events: int
    trace_digest: str
    messages_by_type: dict[str, int] = field(default_factory=dict)
    # What a VM host acts on never lets a VM run twice (fabric.sim.checker.check_fencing):
    # checked on the answers clients accepted, apart from the replicas' agreement.
    fencing_violations: tuple[str, ...] = ()
    # The replicas' own counters (elections, view changes, snapshots, dropped input...),
    # summed over replicas and their incarnations: which paths the run exercised.
    replica_counters: dict[str, int] = field(default_factory=dict)
    # Virtual time from call to result of the completed operations.
    latency_ms_p50: int = 0
    latency_ms_p99: int = 0

    @property
    def ok(self) -> bool:
        """No safety violation and no liveness failure."""
        return not self.safety_violations and not self.liveness_failures


class _Workload:
    """Random ledger operations, mostly plausible against what this client last saw."""

    _UNKNOWN = object()

    def __init__(self, rng: random.Random, vms: list[str], nodes: tuple[str, ...]) -> None:
        self._rng = rng
        self._vms = vms
        self._nodes = nodes
        self._known: dict[str, Any] = {}

    def learn(self, op: Any, result: Any) -> None:
        """Remember the record an answer showed."""
        if isinstance(result, Outcome):
            self._known[op.vm] = result.record

    def next(self) -> tuple[Any, bool]:
        """The next operation and whether it is a read."""
        rng = self._rng
        vm = rng.choice(self._vms)
        rec = self._known.get(vm, self._UNKNOWN)
        r = rng.random()
        if r < 0.2:
            return ReadVm(vm=vm), True
        if rec is None or (rec is self._UNKNOWN and r < 0.5):
            return RegisterVm(vm=vm, node=rng.choice(self._nodes)), False
        if not isinstance(rec, VmRecord):
            src = rng.choice(self._nodes)
            return BeginMigration(vm=vm, source=src, destination=self._other(src)), False
        if rec.migration is not None:
            if r < 0.65:
                return CommitMigration(vm=vm, epoch=rec.migration.epoch), False
            if r < 0.9:
                return AbortMigration(vm=vm, epoch=rec.migration.epoch, reason="test"), False
            return BeginMigration(vm=vm, source=rec.owner, destination=self._other(rec.owner)), False
        if r < 0.8:
            return BeginMigration(vm=vm, source=rec.owner, destination=self._other(rec.owner)), False
        if r < 0.9:
            return RemoveVm(vm=vm, epoch=rec.epoch), False
        return CommitMigration(vm=vm, epoch=rec.epoch + 1), False

    def _other(self, node: str) -> str:
        return self._rng.choice([x for x in self._nodes if x != node])


class _MigrationStream(_Workload):
    """Each client migrates its own VMs, one step at a time: register, then begin and commit, again
    and again; after an answer it did not get (abandoned), it reads the VM first. So every VM's
    final epoch counts the migrations committed (ACP's tests: nothing lost, nothing applied twice)."""

    def next(self) -> tuple[Any, bool]:
        """The VM's next step, or a read where the last answer is unknown."""
        vm = self._rng.choice(self._vms)
        rec = self._known.get(vm, self._UNKNOWN)
        if rec is self._UNKNOWN:
            return ReadVm(vm=vm), True
        if rec is None:
            return RegisterVm(vm=vm, node=self._nodes[0]), False
        if rec.migration is not None:
            return CommitMigration(vm=vm, epoch=rec.migration.epoch), False
        return BeginMigration(vm=vm, source=rec.owner, destination=self._other(rec.owner)), False

    def forget(self, op: Any) -> None:
        """The answer to `op` never came: its VM's state is unknown until read."""
        self._known.pop(op.vm, None)


class _Op:
    __slots__ = ("call", "call_ms", "client", "op", "result", "ret", "ret_ms", "status")

    def __init__(self, client: str, op: Any, call: int, call_ms: int) -> None:
        self.client = client
        self.op = op
        self.call = call
        self.call_ms = call_ms
        self.ret: int | None = None
        self.ret_ms = 0
        self.result: Any = None
        self.status = "pending"


class Simulation:
    """One run's world: replicas, storages, clients, network, event queue. Use `run()`."""

    def __init__(self, config: RunConfig, seed: int, faults: Faults,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config.validate()
        self._log = log  # a replay's event log (jobs/simulate.py --replay): every delivery and state change
        self.seed = seed
        self.spec = get_protocol(config.protocol)
        n = config.replicas
        self.client_ids = tuple(f"c{i}" for i in range(1, config.clients + 1))
        options = {**(SIM_OPTIONS.get(config.protocol, {}) if config.sim_options else {}), **config.options}
        self.cluster = self.spec.cluster(ClusterParams(
            n=n, seed=seed, state_machine=LedgerStateMachine, client_ids=self.client_ids,
            signatures=config.signatures, options=options))  # type: ignore[arg-type]
        self.faults = faults.validate(replica_ids=self.cluster.replica_ids, fault_model=self.spec.fault_model,
                                      faults_tolerated=self.cluster.faults_tolerated,
                                      membership=self.spec.membership)
        self._net_rng = random.Random(f"{seed}:network")
        self.now = 0
        self._seq = 0  # insertion number: breaks time ties, and orders history events
        self._queue: list[tuple[int, int, int, Any, Any, Any]] = []
        self.events = 0
        self._trace = hashlib.blake2b(digest_size=16)
        self.storages = {rid: self.cluster.new_storage(rid) for rid in self.cluster.replica_ids}
        self._incarnation = dict.fromkeys(self.cluster.replica_ids, 0)
        self.replicas: dict[NodeId, Any] = {rid: self._boot(rid) for rid in self.cluster.replica_ids}
        self._tick_token: dict[NodeId, tuple[int, int] | None] = dict.fromkeys(self.replicas)
        self.byzantine: dict[NodeId, tuple[Behaviour, ByzantineContext]] = {}
        coalition: dict[Any, Any] = {}  # shared by this run's Byzantine replicas (behaviour "collude")
        for b in self.faults.byzantine:
            ctx = ByzantineContext(replica=b.replica, replica_ids=self.cluster.replica_ids,
                                   signer=self.cluster.replica_signer(b.replica),
                                   rng=random.Random(f"{seed}:byzantine:{b.replica}"), coalition=coalition)
            self.byzantine[b.replica] = (make_behaviour(b.behaviour), ctx)
        vms = [f"vm-{i}" for i in range(1, config.vms + 1)]
        self.clients: dict[str, ConsensusClient] = {}
        self._workloads: dict[str, _Workload] = {}
        self._client_rng: dict[str, random.Random] = {}
        self._client_ops_left: dict[str, int] = {}
        self._client_op: dict[str, _Op | None] = {}
        self._client_tick_token: dict[str, int | None] = {}
        for cid in self.client_ids:
            self.clients[cid] = ConsensusClient(cid, self.cluster.client_policy, config=config.client,
                                                signer=self.cluster.client_signer(cid))
            self._client_rng[cid] = random.Random(f"{seed}:client:{cid}")
            if config.workload == "migrations":
                mine = [f"{cid}-{vm}" for vm in vms]
                stream = _MigrationStream(random.Random(f"{seed}:workload:{cid}"), mine, config.nodes)
                stream._known = dict.fromkeys(mine)  # None: not registered yet
                self._workloads[cid] = stream
            else:
                self._workloads[cid] = _Workload(random.Random(f"{seed}:workload:{cid}"), vms, config.nodes)
            self._client_ops_left[cid] = config.ops_per_client
            self._client_op[cid] = None
            self._client_tick_token[cid] = None
        self.history: list[_Op] = []
        # replica -> (index, slot) -> (request key, result): what each honest replica applied
        self.applied: dict[NodeId, dict[tuple[int, int], tuple[Any, Any]]] = {r: {} for r in self.replicas}
        # position -> (batch digest, first honest replica to execute it), from Ready.decided
        self.decided: dict[int, tuple[bytes, NodeId]] = {}
        self.outcomes_seen: list[Outcome] = []
        self.safety: list[str] = []
        self.messages = 0
        self.messages_by_type: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0
        self.crashed: set[NodeId] = set()
        self.crash_count = 0
        self._removed: dict[int, NodeId] = {}  # reconfiguration -> the voter it removed
        self.reconfigs_done = 0
        # Partitions in force, with leader-isolating ones resolved to groups when they start.
        self._partitions = [p for p in self.faults.partitions if p.kind != "isolate-leader"]
        self._bound = config.liveness_bound_ms
        self._ops_outstanding = 0
        self._live_deadline = _NEVER  # the earliest time by which an outstanding operation must complete
        self._topology_rng = random.Random(f"{seed}:targets")
        self._busy_us: dict[NodeId, int] = {}  # cpu_us_per_message: when each replica is free again

    # -- plumbing --------------------------------------------------------------

    def _push(self, t: int, kind: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, a, b, c))

    def _boot(self, rid: NodeId) -> Any:
        self._incarnation[rid] += 1
        rng = random.Random(f"{self.seed}:replica:{rid}:{self._incarnation[rid]}")
        return self.cluster.new_replica(rid, self.storages[rid], now_ms=self.now, rng=rng)

    def _schedule_tick(self, rid: NodeId) -> None:
        replica = self.replicas.get(rid)
        if replica is None:
            return
        d = replica.deadline_ms()
        if d is None:
            return
        d = max(d, self.now)
        have = self._tick_token.get(rid)
        if have is not None and have[0] <= d:
            return
        self._seq += 1
        self._tick_token[rid] = (d, self._seq)
        heapq.heappush(self._queue, (d, self._seq, _TICK, rid, self._seq, None))

    def _schedule_client_tick(self, cid: str) -> None:
        d = self.clients[cid].deadline_ms()
        if d is None:
            self._client_tick_token[cid] = None
            return
        self._seq += 1
        self._client_tick_token[cid] = self._seq
        heapq.heappush(self._queue, (max(d, self.now), self._seq, _CLIENT_TICK, cid, self._seq, None))

    def _blocked(self, src: Any, dst: Any) -> bool:
        if not self._partitions or self.now >= self.faults.heal_ms:  # the common case, checked first
            return False
        now = self.now
        return any(p.active(now) and p.cuts(src, dst) for p in self._partitions)

    def _send(self, src: Any, dst: Any, msg: Any) -> None:
        if self._blocked(src, dst):
            self.dropped += 1
            return
        f = self.faults
        rng = self._net_rng
        copies = 1
        if self.now < f.heal_ms:
            if f.drop_rate and rng.random() < f.drop_rate:
                self.dropped += 1
                return
            if f.dup_rate and rng.random() < f.dup_rate:
                copies = 2
                self.duplicated += 1
        for _ in range(copies):
            delay = f.delay.sample_link(rng, src, dst)
            if self.now < f.heal_ms and f.reorder_rate and rng.random() < f.reorder_rate:
                delay += rng.randint(1, f.reorder_ms)
                self.reordered += 1
            self._push(self.now + delay, _DELIVER, src, dst, msg)

    def _process(self, rid: NodeId, ready: Any) -> None:
        if ready is EMPTY_READY:
            self._schedule_tick(rid)
            return
        if self._log is not None:
            st = self.replicas[rid].status()
            self._log(f"{self.now:6d}   r{rid} {st.role} term={st.term} commit={st.commit}"
                      f"{' persist ' + ready.persist.brief() if ready.persist is not None else ''}"
                      f" sends={len(ready.messages)} commits={len(ready.committed)}")
        if ready.persist is not None:
            self.storages[rid].save(ready.persist)  # persist before anything leaves the node
        messages, replies = ready.messages, ready.replies
        byz = self.byzantine.get(rid)
        if byz is not None:
            behaviour, ctx = byz
            messages = behaviour.messages(ctx, list(messages))
            replies = [r2 for r2 in (behaviour.reply(ctx, r) for r in replies) if r2 is not None]
        counts = self.messages_by_type
        for to, msg in messages:
            self.messages += 1
            name = getattr(msg, "kind", None) or type(msg).__name__  # an envelope names what it carries
            counts[name] = counts.get(name, 0) + 1
            self._send(rid, to, msg)
        if byz is None:
            table = self.applied[rid]
            for c in ready.committed:
                pos = (c.index, c.slot)
                entry = (c.request.key, c.result)
                have = table.setdefault(pos, entry)
                if have != entry:
                    self.safety.append(f"replica {rid} applied {pos} twice differently: {have} then {entry}")
                if isinstance(c.result, Outcome):
                    self.outcomes_seen.append(c.result)
            for pos, d in ready.decided:
                have = self.decided.setdefault(pos, (d, rid))
                if have[0] != d and len(self.safety) < 20:
                    self.safety.append(f"position {pos}: replica {have[1]} executed batch "
                                       f"{have[0].hex()[:8]}, replica {rid} batch {d.hex()[:8]}")
        for reply in replies:
            self._send(rid, reply.client_id, reply)
        self._schedule_tick(rid)

    # -- clients ---------------------------------------------------------------

    def _client_next(self, cid: str) -> None:
        if self._client_ops_left[cid] <= 0:
            return
        self._client_ops_left[cid] -= 1
        op, read_only = self._workloads[cid].next()
        self._seq += 1
        record = _Op(cid, op, self._seq, self.now)
        self.history.append(record)
        self._client_op[cid] = record
        self._ops_outstanding += 1
        self._live_deadline = min(self._live_deadline, max(self.now, self.faults.heal_ms) + self._bound)
        out = self.clients[cid].submit(op, self.now, read_only=read_only)
        if self.now + self.config.op_timeout_ms < self.faults.heal_ms:
            self._push(self.now + self.config.op_timeout_ms, _ABANDON, cid, record)
        self._client_output(cid, out)

    def _client_output(self, cid: str, out: Any) -> None:
        for to, req in out.sends:
            self._send(cid, to, req)
        if out.done is not None:
            record = self._client_op[cid]
            assert record is not None and record.op == out.done.request.op
            self._seq += 1
            self._client_op[cid] = None
            self._ops_outstanding -= 1
            self._live_deadline = min((max(op.call_ms, self.faults.heal_ms) + self._bound
                                       for op in self._client_op.values() if op is not None), default=_NEVER)
            if out.done.status == "ok":
                record.ret, record.result, record.status = self._seq, out.done.result, "ok"
                record.ret_ms = self.now
                self._workloads[cid].learn(record.op, out.done.result)
                if isinstance(out.done.result, Outcome):
                    self.outcomes_seen.append(out.done.result)
            else:
                record.status = out.done.status  # "gave-up" or "abandoned": outcome unknown
                workload = self._workloads[cid]
                if isinstance(workload, _MigrationStream):
                    workload.forget(record.op)
            think = self._client_rng[cid].randint(0, self.config.think_ms_max)
            self._push(self.now + think, _CLIENT_NEXT, cid)
        self._schedule_client_tick(cid)

    # -- the loop --------------------------------------------------------------

    def _deliver(self, src: Any, dst: Any, msg: Any) -> None:
        if self._blocked(src, dst):
            self.dropped += 1
            return
        if self._log is not None:
            self._log(f"{self.now:6d} {src}->{dst} {_brief(msg)}")
        if isinstance(dst, str):
            client = self.clients.get(dst)
            if client is not None and isinstance(msg, ClientReply):
                self._client_output(dst, client.on_reply(src, msg, self.now))
            return
        replica = self.replicas.get(dst)
        if replica is None:
            return  # crashed: the message is lost
        cost = self.config.cpu_us_per_message
        if cost:
            # The replica serves its messages one at a time: one that arrives while it is busy
            # beyond this millisecond waits for it (its queue is the event queue, in order).
            busy = self._busy_us.get(dst, 0)
            if busy >= (self.now + 1) * 1000:
                self._push(busy // 1000, _DELIVER, src, dst, msg)
                return
            self._busy_us[dst] = max(busy, self.now * 1000) + cost
        self._process(dst, replica.tick(self.now))  # timers reset by this event count from now
        if isinstance(msg, Request) and isinstance(src, str):
            ready = replica.read(msg) if msg.read_only else replica.propose(msg)
        else:
            ready = replica.step(msg)
        self._process(dst, ready)

    def _reconfigure(self, k: int, phase: str) -> None:
        """Ask the leader of the moment to remove (or later re-add) one voter; retry until it takes."""
        rc = self.faults.reconfigurations[k]
        leader = self._leader()
        replica = self.replicas.get(leader) if leader is not None else None
        done = False
        if replica is not None:
            voters = set(replica.voters)
            if phase == "remove" and len(voters) > 1:
                victim = self._topology_rng.choice(sorted(voters))
                self._removed[k] = victim
                target = voters - {victim}
            else:
                target = voters | {self._removed.get(k, leader)}
            try:
                ready = replica.change_membership(tuple(sorted(target)))
            except ConsensusError:
                pass  # another change is still uncommitted, or this leader just lost its term
            else:
                done = True
                self.reconfigs_done += 1
                if self._log is not None:
                    self._log(f"{self.now:6d} MEMBERSHIP r{leader} proposes {sorted(target)}")
                self._process(leader, ready)
        if not done and (phase == "add" or self.now < self.faults.heal_ms):
            self._push(self.now + RECONF_RETRY_MS, _RECONF, k, phase)
        elif done and phase == "remove":
            self._push(max(rc.add_ms, self.now + 1), _RECONF, k, "add")

    def _keep_counters(self, replica: Any) -> None:
        for k, v in replica.status().counters.items():
            self._counters[k] = self._counters.get(k, 0) + v

    def _leader(self) -> NodeId | None:
        """The lowest-numbered live replica that believes it leads, if any."""
        for rid in sorted(self.replicas):
            replica = self.replicas[rid]
            if replica is not None and replica.status().leader == rid:
                return rid
        return None

    def _isolate_leader(self, p: Partition) -> None:
        leader = self._leader()
        if leader is None:
            return
        clients = list(self.client_ids)
        self._topology_rng.shuffle(clients)
        side = (leader, *clients[:p.leader_clients])
        rest = tuple(a for a in (*self.cluster.replica_ids, *self.client_ids) if a not in side)
        if self._log is not None:
            self._log(f"{self.now:6d} ISOLATE {side} from {rest}")
        self._partitions.append(replace(p, kind="split", groups=(side, rest)))

    def _all_done(self) -> bool:
        return self._ops_outstanding == 0 and not any(self._client_ops_left.values())

    def run(self) -> RunResult:
        """Run to the end (every operation done, or the liveness deadline) and check the history."""
        f = self.faults
        for rid in self.replicas:
            self._schedule_tick(rid)
        for cid in self.client_ids:
            self._push(self._client_rng[cid].randint(0, self.config.think_ms_max), _CLIENT_NEXT, cid)
        for k, c in enumerate(f.crashes):
            self._push(c.at_ms, _CRASH, k)
        for p in f.partitions:
            if p.kind == "isolate-leader":
                self._push(p.start_ms, _ISOLATE, p)
        for k, rc in enumerate(f.reconfigurations):
            self._push(rc.remove_ms, _RECONF, k, "remove")
        for at_ms, mode in self.config.mode_changes:
            self._push(at_ms, _MODE, mode)
        self._push(f.heal_ms, _HEAL)
        liveness: list[str] = []
        try:
            while self._queue and not self._all_done():
                t, _, kind, a, b, c = heapq.heappop(self._queue)
                # Liveness: an operation must complete within the bound of the heal or of
                # its call, whichever is later.
                if t > self._live_deadline:
                    break
                self.now = t
                self.events += 1
                if self.events > self.config.events_max:
                    liveness.append(f"event budget of {self.config.events_max} exhausted at {t} ms")
                    break
                self._trace.update(f"{t}|{kind}|{a}|{type(c).__name__}".encode())
                if kind == _DELIVER:
                    self._deliver(a, b, c)
                elif kind == _TICK:
                    if self._tick_token.get(a) == (t, b):
                        self._tick_token[a] = None
                        replica = self.replicas.get(a)
                        if replica is not None:
                            self._process(a, replica.tick(t))
                elif kind == _CLIENT_TICK:
                    if self._client_tick_token.get(a) == b:
                        self._client_tick_token[a] = None
                        self._client_output(a, self.clients[a].tick(t))
                elif kind == _CLIENT_NEXT:
                    self._client_next(a)
                elif kind == _CRASH:
                    crash = f.crashes[a]
                    rid = crash.replica if crash.replica is not None else self._leader()
                    if rid is not None and rid not in self.crashed:
                        if self._log is not None:
                            self._log(f"{t:6d} CRASH r{rid}")
                        self._keep_counters(self.replicas[rid])
                        self.crashed.add(rid)
                        self.crash_count += 1
                        self.replicas[rid] = None  # volatile state gone; storage stays
                        self._busy_us.pop(rid, None)  # and what it was busy with
                        self._tick_token[rid] = None
                        if crash.restart_ms is not None:
                            self._push(crash.restart_ms, _RESTART, rid)
                elif kind == _ISOLATE:
                    self._isolate_leader(a)
                elif kind == _RECONF:
                    self._reconfigure(a, b)
                elif kind == _MODE:
                    if self._log is not None:
                        self._log(f"{t:6d} MODE {a}")
                    for rid in sorted(self.replicas):
                        replica = self.replicas[rid]
                        if replica is not None and hasattr(replica, "change_mode"):
                            self._process(rid, replica.tick(t))
                            self._process(rid, replica.change_mode(a))
                elif kind == _ABANDON:
                    if self._client_op.get(a) is b:  # still waiting for that very operation
                        done = self.clients[a].abandon(t)
                        self._client_output(a, ClientOutput(done=done))
                elif kind in (_RESTART, _HEAL):
                    for rid in sorted(self.crashed) if kind == _HEAL else [a]:
                        if rid in self.crashed:
                            if self._log is not None:
                                self._log(f"{t:6d} RESTART r{rid}")
                            self.crashed.discard(rid)
                            self.replicas[rid] = self._boot(rid)
                            self._schedule_tick(rid)
        except Exception as e:  # a core raised: a local bug, never acceptable
            where = "".join(traceback.format_exception(e)[-3:])
            self.safety.append(f"{RAISED} at {self.now} ms: {type(e).__name__}: {e}\n{where}")
        return self._result(liveness)

    def _result(self, liveness: list[str]) -> RunResult:
        f = self.faults
        bound = self.config.liveness_bound_ms
        for op in self.history:
            if op.status == "pending":
                liveness.append(f"{op.client} {op.op} called at {op.call_ms} ms did not complete within "
                                f"{bound} ms of max(call, heal at {f.heal_ms} ms)")
            elif op.status == "gave-up":
                liveness.append(f"{op.client} gave up on {op.op}")
        missing = self._client_ops_left
        if not liveness and any(missing.values()):
            liveness.append(f"clients did not get to issue all operations: {missing}")
        history = [HistoryOp(client=o.client, op=o.op, call=o.call, ret=o.ret,
                             result=o.result if isinstance(o.result, Outcome) else None)
                   for o in self.history]
        lin, inconclusive = check_linearizable(history)
        safety = [*self.safety, *lin, *check_single_owner(self.outcomes_seen), *check_prefixes(self.applied)]
        fencing = check_fencing(history)
        summary = {**f.summary(), "dropped": self.dropped, "duplicated": self.duplicated,
                   "reordered": self.reordered, "crashes_done": self.crash_count,
                   "membership_changes_done": self.reconfigs_done}
        for replica in self.replicas.values():
            if replica is not None:
                self._keep_counters(replica)
        latencies = sorted(o.ret_ms - o.call_ms for o in self.history if o.status == "ok")
        p50 = latencies[len(latencies) // 2] if latencies else 0
        p99 = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] if latencies else 0
        return RunResult(protocol=self.config.protocol, seed=self.seed, n=self.config.replicas,
                         faults=summary, ops_invoked=len(self.history),
                         ops_completed=sum(1 for o in self.history if o.status == "ok"),
                         ops_gave_up=sum(1 for o in self.history if o.status == "gave-up"),
                         ops_abandoned=sum(1 for o in self.history if o.status == "abandoned"),
                         safety_violations=tuple(safety), liveness_failures=tuple(liveness[:20]),
                         inconclusive=inconclusive, messages=self.messages,
                         decisions=sum(1 for o in self.history if o.status == "ok"), virtual_ms=self.now,
                         events=self.events, trace_digest=self._trace.hexdigest(),
                         messages_by_type=dict(sorted(self.messages_by_type.items())),
                         fencing_violations=tuple(fencing),
                         replica_counters=dict(sorted(self._counters.items())),
                         latency_ms_p50=p50, latency_ms_p99=p99)


def _brief(msg: Any) -> str:
    if isinstance(msg, ClientReply):
        return f"Reply {msg.client_id}#{msg.request_id} {msg.status} hint={msg.leader_hint}"
    brief = getattr(msg, "brief", None)
    return brief() if brief is not None else type(msg).__name__


def run(config: RunConfig, seed: int, faults: Faults | None = None,
        log: Callable[[str], None] | None = None) -> RunResult:
    """One seeded run; `faults` None means a fault-free network (heal at 0); `log` gets an event log."""
    return Simulation(config, seed, faults or Faults(), log).run()


def random_faults(config: RunConfig, seed: int, kinds: tuple[str, ...], *, heal_ms: int = 1_500,
                  behaviours: tuple[str, ...] | None = None) -> Faults:
    """The faults a campaign draws for `seed` (same seed, same faults); `behaviours` as Faults.random."""
    spec = get_protocol(config.protocol)
    n = config.replicas
    clients = tuple(f"c{i}" for i in range(1, config.clients + 1))
    return Faults.random(random.Random(f"{seed}:faults"), kinds=kinds, replica_ids=spec.replica_ids(n),
                         client_ids=clients, fault_model=spec.fault_model,
                         faults_tolerated=spec.faults_tolerated(n), heal_ms=heal_ms,
                         membership=spec.membership, behaviours=behaviours)


def with_options(config: RunConfig, **options: Any) -> RunConfig:
    """A copy of `config` with protocol options added."""
    return replace(config, options={**config.options, **options})
