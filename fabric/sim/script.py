"""Scenario scripts for consensus replicas, in the style of etcd-io/raft's interaction tests.

A script is a list of commands; the indented lines under each are its expected
output (tests compare, NOVACRON_REWRITE=1 rewrites them for review). Messages
are not delivered until a command says so, so a script controls every
interleaving. Verbs:

    add-nodes N [protocol=raft|pbft] [key=value ...]   N replicas (Raft ids 1..N, PBFT 0..N-1);
                                                       key=value are protocol options
    add-node ID                          Raft: a new, empty replica that joins later (no voters yet)
    campaign ID                          Raft: start an election now
    propose ID[,ID...] [client=C] OP ARGS
                                         a client's new request, to one replica or several (OP:
                                         register VM NODE, begin VM SRC DST, commit VM EPOCH,
                                         abort VM EPOCH, remove VM EPOCH, read VM)
    resend ID[,ID...] [client=C]         the client's last request again (a retry)
    membership ID add|remove X           Raft: the leader ID proposes adding or removing X
    tick ID MS | tick-heartbeat ID | tick-election ID | timeout ID
                                         advance ID's clock (tick-election: 2 election timeouts;
                                         timeout: PBFT's request timeout)
    deliver-msgs [ID ...] [drop=ID,...]  deliver the queued messages to ID (default: all), once;
                                         drop= loses those addressed to the listed nodes instead
    stabilize [ID ...]                   deliver until nothing is queued (partitions still apply)
    partition A B | C D ...              messages between groups are lost; `heal` ends it
    crash ID | restart ID                lose volatile state / rebuild from storage
    byzantine ID BEHAVIOUR               ID's outgoing messages go through a Byzantine behaviour
    status [ID]   show-log ID   show-ledger ID   show-queue
"""

from __future__ import annotations

import random
import shlex
from typing import Any

from fabric.consensus.api import ClientReply, Ready, Request
from fabric.consensus.canonical import encode
from fabric.consensus.errors import ConsensusError
from fabric.consensus.raft import RaftConfig, RaftReplica
from fabric.consensus.registry import ClusterParams, get_protocol
from fabric.ledger.replicated import LedgerStateMachine, ReadVm
from fabric.ledger.state import (
    AbortMigration,
    BeginMigration,
    CommitMigration,
    Outcome,
    RegisterVm,
    RemoveVm,
)
from fabric.sim.byzantine import ByzantineContext, make_behaviour

STABILIZE_ROUNDS_MAX = 200  # a script that needs more is looping; say so instead of hanging
SCRIPT_SEED = 1  # keys and election jitter: fixed, so the expected output never drifts


def _outcome(result: Any) -> str:
    if not isinstance(result, Outcome):
        return repr(result)
    rec = result.record
    body = "none" if rec is None else f"{rec.owner}@{rec.epoch}" + (
        f" open {rec.migration.source}->{rec.migration.destination}@{rec.migration.epoch}"
        if rec.migration else "")
    return ("ok " if result.accepted else "rejected ") + body


def _brief(msg: Any) -> str:
    if isinstance(msg, Request):
        return f"Request {msg.brief()}"
    return msg.brief() if hasattr(msg, "brief") else type(msg).__name__


def _parse_op(words: list[str]) -> tuple[Any, bool]:
    verb, *a = words
    ops = {"register": lambda: RegisterVm(vm=a[0], node=a[1]),
           "begin": lambda: BeginMigration(vm=a[0], source=a[1], destination=a[2]),
           "commit": lambda: CommitMigration(vm=a[0], epoch=int(a[1])),
           "abort": lambda: AbortMigration(vm=a[0], epoch=int(a[1])),
           "remove": lambda: RemoveVm(vm=a[0], epoch=int(a[1])),
           "read": lambda: ReadVm(vm=a[0])}
    if verb not in ops:
        raise ValueError(f"unknown operation {verb!r}")
    return ops[verb](), verb == "read"


def _value(raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw)
    except ValueError:
        return raw


class ScriptEnv:
    """The world of one script: replicas, storages, per-node clocks, a queue of messages."""

    def __init__(self) -> None:
        self.protocol = ""
        self.cluster: Any = None
        self.options: dict[str, Any] = {}
        self.replicas: dict[int, Any] = {}
        self.storages: dict[int, Any] = {}
        self.clock: dict[int, int] = {}
        self.queue: list[tuple[Any, Any, Any]] = []  # (src, dst, msg), in send order
        self.groups: list[set[Any]] = []
        self.byzantine: dict[int, tuple[Any, ByzantineContext]] = {}
        self.request_ids: dict[str, int] = {}
        self.last_request: dict[str, Request] = {}
        self.clients = ("c", "c1", "c2", "c3")
        self.boots = 0

    # -- driving -------------------------------------------------------------

    def run(self, text: str) -> str:
        """Run a script; return it with every command's output (see the module doc)."""
        out: list[str] = []
        for line in text.splitlines():
            if not line.strip() or line.startswith("#") or line.startswith(" "):
                if line.startswith("#") or not line.strip():
                    out.append(line)
                continue
            out.append(line)
            try:
                got = self.command(shlex.split(line))
            except (ConsensusError, ValueError, KeyError, IndexError) as e:
                got = [f"error: {type(e).__name__}: {e}"]
            out += [f"  {g}" for g in got] or ["  ok"]
        return "\n".join(out) + "\n"

    def command(self, words: list[str]) -> list[str]:
        """Run one command; return its output lines."""
        verb, *args = words
        handler = getattr(self, "_cmd_" + verb.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {verb!r}")
        return handler(args)

    def _boot(self, rid: int) -> Any:
        self.boots += 1
        rng = random.Random(f"{SCRIPT_SEED}:{rid}:{self.boots}")
        return self.cluster.new_replica(rid, self.storages[rid], now_ms=self.clock[rid], rng=rng)

    def _handle(self, rid: int, ready: Ready, label: str) -> list[str]:
        """Carry out a Ready the way a shell must: persist, then send, then deliver."""
        lines: list[str] = []
        if ready.persist is not None:
            self.storages[rid].save(ready.persist)
            lines.append(f"persist {ready.persist.brief()}")
        messages = list(ready.messages)
        replies = list(ready.replies)
        byz = self.byzantine.get(rid)
        if byz is not None:
            behaviour, ctx = byz
            messages = behaviour.messages(ctx, messages)
            replies = [r2 for r2 in (behaviour.reply(ctx, r) for r in replies) if r2 is not None]
        for to, msg in messages:
            self.queue.append((rid, to, msg))
            lines.append(f"{rid}->{to} {_brief(msg)}")
        for c in ready.committed:
            slot = f".{c.slot}" if self.protocol == "pbft" else ""
            lines.append(f"applied {c.index}{slot} {c.request.brief()} -> {_outcome(c.result)}")
        for r in replies:
            lines.append(self._reply_line(r))
        if not lines:
            return []
        return [f"> {label}", *("  " + x for x in lines)]

    def _reply_line(self, r: ClientReply) -> str:
        if r.status == "ok":
            return f"reply {r.client_id}#{r.request_id} -> {_outcome(r.result)}"
        hint = f" leader={r.leader_hint}" if r.leader_hint is not None else ""
        return f"reply {r.client_id}#{r.request_id} {r.status}{hint}"

    def _rid(self, raw: str) -> int:
        rid = int(raw)
        if rid not in self.replicas:
            raise KeyError(f"no replica {rid}")
        return rid

    def _live(self, rid: int) -> Any:
        replica = self.replicas[rid]
        if replica is None:
            raise ValueError(f"replica {rid} is crashed")
        return replica

    def _cut(self, src: Any, dst: Any) -> bool:
        gs = next((k for k, g in enumerate(self.groups) if src in g), None)
        gd = next((k for k, g in enumerate(self.groups) if dst in g), None)
        return gs is not None and gd is not None and gs != gd

    # -- commands ------------------------------------------------------------

    def _cmd_add_nodes(self, args: list[str]) -> list[str]:
        n = int(args[0])
        opts = dict(a.split("=", 1) for a in args[1:])
        self.protocol = opts.pop("protocol", "raft")
        self.options = {k: _value(v) for k, v in opts.items()}
        spec = get_protocol(self.protocol)
        self.cluster = spec.cluster(ClusterParams(n=n, seed=SCRIPT_SEED, state_machine=LedgerStateMachine,
                                                  client_ids=self.clients, signatures="hmac",
                                                  options=self.options))
        for rid in self.cluster.replica_ids:
            self.storages[rid] = self.cluster.new_storage(rid)
            self.clock[rid] = 0
            self.replicas[rid] = self._boot(rid)
        return [f"{self.protocol}: replicas {', '.join(map(str, self.cluster.replica_ids))}"]

    def _cmd_add_node(self, args: list[str]) -> list[str]:
        rid = int(args[0])
        if self.protocol != "raft" or rid in self.replicas:
            raise ValueError("add-node is for a new Raft replica")
        self.storages[rid] = self.cluster.new_storage(rid)
        self.clock[rid] = 0
        cfg = RaftConfig(id=rid, voters=(), **self.options)
        self.replicas[rid] = RaftReplica(cfg, state_machine=LedgerStateMachine(),
                                         rng=random.Random(f"{SCRIPT_SEED}:{rid}:join"), now_ms=0)
        return [f"replica {rid} joins with no voters"]

    def _cmd_campaign(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        return self._handle(rid, self._live(rid).campaign(), f"{rid} campaigns")

    def _targets_and_client(self, args: list[str]) -> tuple[list[int], str, list[str]]:
        targets = [self._rid(x) for x in args[0].split(",")]
        rest = args[1:]
        client = "c"
        if rest and rest[0].startswith("client="):
            client = rest.pop(0).split("=", 1)[1]
        return targets, client, rest

    def _submit(self, targets: list[int], req: Request) -> list[str]:
        lines: list[str] = []
        for rid in targets:
            replica = self._live(rid)
            ready = replica.read(req) if req.read_only else replica.propose(req)
            lines += self._handle(rid, ready, f"{rid} receives {req.brief()}")
        return lines

    def _cmd_propose(self, args: list[str]) -> list[str]:
        targets, client, rest = self._targets_and_client(args)
        op, read_only = _parse_op(rest)
        rid_next = self.request_ids.get(client, 0) + 1
        self.request_ids[client] = rid_next
        req = Request(client_id=client, request_id=rid_next, op=op, read_only=read_only)
        signer = self.cluster.client_signer(client)
        if signer is not None:
            req = Request(client_id=client, request_id=rid_next, op=op, read_only=read_only,
                          signature=signer.sign(encode(req.signed_part())))
        self.last_request[client] = req
        return self._submit(targets, req)

    def _cmd_resend(self, args: list[str]) -> list[str]:
        targets, client, _ = self._targets_and_client(args)
        return self._submit(targets, self.last_request[client])

    def _cmd_membership(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        replica = self._live(rid)
        change, target = args[1], int(args[2])
        voters = set(replica.voters)
        voters = voters | {target} if change == "add" else voters - {target}
        return self._handle(rid, replica.change_membership(tuple(sorted(voters))),
                            f"{rid} proposes voters {','.join(map(str, sorted(voters)))}")

    def _advance(self, rid: int, ms: int) -> list[str]:
        self.clock[rid] += ms
        return self._handle(rid, self._live(rid).tick(self.clock[rid]), f"{rid} at {self.clock[rid]} ms")

    def _cmd_tick(self, args: list[str]) -> list[str]:
        return self._advance(self._rid(args[0]), int(args[1]))

    def _cmd_tick_heartbeat(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        return self._advance(rid, self._live(rid).config.heartbeat_ms)

    def _cmd_tick_election(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        return self._advance(rid, 2 * self._live(rid).config.election_ms)

    def _cmd_timeout(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        return self._advance(rid, self._live(rid).config.request_timeout_ms)

    def _deliver_once(self, targets: set[int] | None, drop: set[int]) -> list[str]:
        picked = [targets is None or m[1] in targets or m[1] in drop for m in self.queue]
        batch = [m for m, p in zip(self.queue, picked, strict=True) if p]
        self.queue = [m for m, p in zip(self.queue, picked, strict=True) if not p]
        lines: list[str] = []
        for src, dst, msg in batch:
            if dst in drop or self._cut(src, dst):
                lines.append(f"dropped {src}->{dst} {_brief(msg)}")
                continue
            if isinstance(dst, str):
                continue  # a client: replies were shown when they were sent
            replica = self.replicas.get(dst)
            if replica is None:
                lines.append(f"lost {src}->{dst} {_brief(msg)} (crashed)")
                continue
            ready = replica.propose(msg) if isinstance(msg, Request) else replica.step(msg)
            lines += self._handle(dst, ready, f"{dst} receives {src}->{dst} {_brief(msg)}")
        return lines

    def _cmd_deliver_msgs(self, args: list[str]) -> list[str]:
        drop: set[int] = set()
        targets: set[int] = set()
        for a in args:
            if a.startswith("drop="):
                drop = {int(x) for x in a.split("=", 1)[1].split(",")}
            else:
                targets.add(self._rid(a))
        return self._deliver_once(targets or None, drop)

    def _cmd_stabilize(self, args: list[str]) -> list[str]:
        targets = {self._rid(a) for a in args} or None
        lines: list[str] = []
        for _ in range(STABILIZE_ROUNDS_MAX):
            if not any(targets is None or m[1] in targets for m in self.queue):
                return lines
            lines += self._deliver_once(targets, set())
        return [*lines, f"still not stable after {STABILIZE_ROUNDS_MAX} rounds"]

    def _cmd_partition(self, args: list[str]) -> list[str]:
        groups: list[set[Any]] = [set()]
        for a in args:
            if a == "|":
                groups.append(set())
            else:
                groups[-1].add(int(a))
        self.groups = groups
        return []

    def _cmd_heal(self, args: list[str]) -> list[str]:
        self.groups = []
        return []

    def _cmd_crash(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        self.replicas[rid] = None
        return [f"replica {rid} crashed; its storage survives"]

    def _cmd_restart(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        self.replicas[rid] = self._boot(rid)
        return self._cmd_status([str(rid)])

    def _cmd_byzantine(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        ctx = ByzantineContext(replica=rid, replica_ids=self.cluster.replica_ids,
                               signer=self.cluster.replica_signer(rid),
                               rng=random.Random(f"{SCRIPT_SEED}:byz"))
        self.byzantine[rid] = (make_behaviour(args[1]), ctx)
        return [f"replica {rid} is Byzantine: {args[1]}"]

    def _cmd_status(self, args: list[str]) -> list[str]:
        ids = [self._rid(a) for a in args] or sorted(self.replicas)
        lines = []
        for rid in ids:
            replica = self.replicas[rid]
            if replica is None:
                lines.append(f"{rid}: crashed")
                continue
            st = replica.status()
            word = "term" if self.protocol == "raft" else "view"
            extra = f" low={replica.low}" if self.protocol == "pbft" else ""
            lines.append(f"{rid}: {st.role} {word}={st.term} leader={st.leader} commit={st.commit} "
                         f"applied={st.applied}{extra} members={','.join(map(str, st.members)) or '-'}")
        return lines

    def _cmd_show_log(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        log = self._live(rid).log
        lines = [f"snapshot {log.snapshot_index}/{log.snapshot_term}"] if log.snapshot_index else []
        lines += [e.brief() for e in log.entries()]
        return lines or ["(empty)"]

    def _cmd_show_ledger(self, args: list[str]) -> list[str]:
        rid = self._rid(args[0])
        ledger = self._live(rid)._sm.ledger
        return [f"{r.vm} {_outcome(Outcome(accepted=True, record=r))[3:]}" for r in ledger.records()] or \
            ["(empty)"]

    def _cmd_show_queue(self, args: list[str]) -> list[str]:
        return [f"{s}->{d} {_brief(m)}" for s, d, m in self.queue] or ["(empty)"]


def run_script(text: str) -> str:
    """Run a consensus scenario script (see the module doc); return it with the output."""
    return ScriptEnv().run(text)
