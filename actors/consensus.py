"""Consensus on Ray: a replica hosted by a NodeActor, and the ledger clients every actor uses.

`ReplicaHost` runs one sans-IO replica: it ticks it, persists before it sends,
carries its messages to the other replicas' actors and its replies to the
clients' actors (Ray calls, fire and forget: a lost message is one the
protocol already tolerates), and hands committed entries to the node.
`LedgerService` is an actor's pool of sans-IO ledger clients. Both sit behind
`LedgerHandle`, which the single-writer ledger implements too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import ray

from actors.metrics import LedgerMetrics
from actors.names import NAMESPACE
from fabric.clock import Clock
from fabric.consensus.api import ClientPolicy, ClientReply, Committed, NodeId, Ready, Replica, Request
from fabric.consensus.client import Completion
from fabric.consensus.signing import Ed25519Signer
from fabric.errors import ConfigError, FabricError, LedgerRejected
from fabric.ledger import LedgerClient, command_from_dict
from fabric.ledger.hosting import LedgerConfig
from fabric.ledger.replicated import LedgerStateMachine
from fabric.ledger.state import Outcome

log = logging.getLogger("novacron.consensus")

# A ledger operation that has no result after this long is given up; its outcome
# is then unknown (it may still commit), which the caller must treat as such.
LEDGER_OP_TIMEOUT_S = 30.0
MESSAGES_PER_CALL_MAX = 256  # one Ray call carries at most this many consensus messages


class LedgerUnavailable(FabricError):
    """The replicated ledger gave no result in time; the operation's outcome is unknown."""


class LedgerHandle(Protocol):
    """What actors need of the ownership ledger, whichever implements it."""

    async def submit(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a command; the VM's new record, or LedgerRejected."""
        ...

    async def read(self, vm: str) -> dict[str, Any] | None:
        """The VM's record (linearizable), or None."""
        ...

    async def records(self) -> list[dict[str, Any]]:
        """Every VM's record (for status pages)."""
        ...

    async def describe(self) -> dict[str, Any]:
        """Health, for status pages."""
        ...


class SingleWriterHandle:
    """The single-writer LedgerActor behind the LedgerHandle interface."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def submit(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a command through the one writer."""
        return await self._actor.submit.remote(command)

    async def read(self, vm: str) -> dict[str, Any] | None:
        """The writer's record of `vm`."""
        return await self._actor.read.remote(vm)

    async def records(self) -> list[dict[str, Any]]:
        """The writer's records."""
        return await self._actor.records.remote()

    async def describe(self) -> dict[str, Any]:
        """The writer's health."""
        return await self._actor.describe.remote()


def actor_of_client(client_id: str) -> str:
    """The actor a client id belongs to ("fabric/controller@3f2a#2" -> "fabric/controller")."""
    return client_id.split("#", 1)[0].split("@", 1)[0]


# Actor handles are looked up again after this long: a node that died and was
# restarted under its name is a new actor, and messages to the old one are lost.
HANDLE_TTL_S = 2.0


class _Actors:
    """Actor handles by name, looked up at most every HANDLE_TTL_S."""

    def __init__(self) -> None:
        self._handles: dict[str, tuple[float, Any]] = {}

    def get(self, name: str) -> Any:
        now = time.monotonic()
        cached = self._handles.get(name)
        if cached is None or now - cached[0] > HANDLE_TTL_S:
            cached = self._handles[name] = (now, ray.get_actor(name, namespace=NAMESPACE))
        return cached[1]


class ReplicaHost:
    """One replica of the ledger, inside a NodeActor."""

    def __init__(self, *, rid: NodeId, replica: Replica, storage: Any, state: LedgerStateMachine,
                 replica_actors: dict[NodeId, str], clock: Clock, tick_ms: int,
                 on_committed: Callable[[Committed], None], metrics: LedgerMetrics | None = None) -> None:
        self.rid = rid
        self.replica = replica
        self.state = state
        self._storage = storage
        self._replica_actors = replica_actors
        self._actors = _Actors()
        self._clock = clock
        self._tick_s = tick_ms / 1000
        self._on_committed = on_committed
        self.calls_sent = 0
        self._metrics = metrics
        if metrics is not None:  # metrics hook: the recovered term is the baseline for view changes
            metrics.record(replica.status())
        self._task = asyncio.get_running_loop().create_task(self._ticker())

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    def deliver(self, messages: list[Any]) -> None:
        """Messages from another replica."""
        self._handle(self.replica.tick(self._now_ms()))
        for m in messages[:MESSAGES_PER_CALL_MAX]:
            self._handle(self.replica.step(m))

    def request(self, requests: list[Request]) -> None:
        """Client requests (commands and reads)."""
        self._handle(self.replica.tick(self._now_ms()))
        for r in requests[:MESSAGES_PER_CALL_MAX]:
            if not isinstance(r, Request):
                continue  # a peer's junk: dropped, as the replicas drop bad messages
            self._handle(self.replica.read(r) if r.read_only else self.replica.propose(r))

    def _handle(self, ready: Ready) -> None:
        if ready.empty:
            return
        if ready.persist is not None:
            self._storage.save(ready.persist)  # durable before anything leaves this node
        by_peer: dict[NodeId, list[Any]] = {}
        for to, msg in ready.messages:
            by_peer.setdefault(to, []).append(msg)
        for to, msgs in by_peer.items():
            name = self._replica_actors.get(to)
            if name is None:
                continue
            try:
                self._actors.get(name).consensus_deliver.remote(msgs)
                self.calls_sent += 1
            except Exception as e:  # a dead peer: the protocol treats it as a lost message
                log.debug("replica %s -> %s: %r", self.rid, to, e)
        for c in ready.committed:
            self._on_committed(c)
        by_client: dict[str, list[ClientReply]] = {}
        for r in ready.replies:
            by_client.setdefault(actor_of_client(r.client_id), []).append(r)
        for actor, replies in by_client.items():
            try:
                self._actors.get(actor).consensus_reply.remote(self.rid, replies)
            except Exception as e:
                log.debug("replica %s reply to %s: %r", self.rid, actor, e)
        if self._metrics is not None:  # metrics hook, last: commits, term/view, leadership
            self._metrics.record(self.replica.status(), ready.committed)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._handle(self.replica.tick(self._now_ms()))
            except Exception:  # a replica bug must not stop its timers silently
                log.exception("replica %s tick failed", self.rid)

    def status(self) -> dict[str, Any]:
        """The replica's role, term, leader, commit and applied indexes."""
        s = self.replica.status()
        return {"id": s.id, "role": s.role, "term": s.term, "leader": s.leader, "commit": s.commit,
                "applied": s.applied, "members": list(s.members), "calls_sent": self.calls_sent}

    def local_records(self) -> tuple[int, list[dict[str, Any]]]:
        """(applied index, records) as this replica has applied them (may lag the leader)."""
        state = getattr(self.replica, "app", None) or self.state  # ACP restores each era into a new one
        return self.replica.status().applied, [r.to_dict() for r in state.ledger.records()]

    def change_mode(self, mode: str) -> None:
        """The link mode changed: an ACP ledger switches protocol (ConfigError for the others)."""
        change = getattr(self.replica, "change_mode", None)
        if change is None:
            raise ConfigError(f"replica {self.rid}'s ledger protocol has no modes (use acp)")
        self._handle(self.replica.tick(self._now_ms()))
        self._handle(change(mode))

    def close(self) -> None:
        """Stop ticking."""
        self._task.cancel()


class LedgerService:
    """An actor's ledger clients: one operation per client at a time, a pool of them."""

    def __init__(self, *, actor_name: str, config: LedgerConfig, policy: ClientPolicy,
                 replica_actors: dict[NodeId, str], key: Any, clock: Clock) -> None:
        """`actor_name` may carry an incarnation ("fabric/controller@3f2a"): a restarted actor's
        clients must not reuse request ids its previous life already spent."""
        self._replica_actors = replica_actors
        self._actors = _Actors()
        self._clock = clock
        self._tick_s = config.tick_ms / 1000
        self._clients: dict[str, LedgerClient] = {}
        self._free: asyncio.Queue[LedgerClient] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[Completion]] = {}
        for k in range(config.clients_per_actor):
            cid = f"{actor_name}#{k}"
            signer = Ed25519Signer(cid, key) if policy.sign_requests else None
            client = LedgerClient(cid, policy, signer=signer)
            self._clients[cid] = client
            self._free.put_nowait(client)
        self.completed = 0
        self._task = asyncio.get_running_loop().create_task(self._ticker())

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    def _send(self, sends: tuple[tuple[NodeId, Request], ...]) -> None:
        by_replica: dict[NodeId, list[Request]] = {}
        for rid, req in sends:
            by_replica.setdefault(rid, []).append(req)
        for rid, reqs in by_replica.items():
            name = self._replica_actors.get(rid)
            if name is None:
                continue
            try:
                self._actors.get(name).consensus_request.remote(reqs)
            except Exception as e:  # the replica's node is gone: the client retries elsewhere
                log.debug("request to replica %s: %r", rid, e)

    async def _run(self, op: Any, read_only: bool) -> Outcome:
        client = await self._free.get()
        try:
            future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
            self._waiting[client.client_id] = future
            out = client.submit(op, self._now_ms(), read_only=read_only)
            self._send(out.sends)
            try:
                done = await asyncio.wait_for(asyncio.shield(future), LEDGER_OP_TIMEOUT_S)
            except TimeoutError:
                client.abandon(self._now_ms())
                raise LedgerUnavailable(f"the ledger gave no result for {op} in {LEDGER_OP_TIMEOUT_S:g} s; "
                                        f"it may still take effect") from None
            if done.status != "ok":
                raise LedgerUnavailable(f"the ledger gave up on {op} ({done.status}); it may take effect")
            self.completed += 1
            return done.result
        finally:
            self._waiting.pop(client.client_id, None)
            self._free.put_nowait(client)

    async def submit(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a command through consensus; the VM's new record, or LedgerRejected."""
        outcome = await self._run(command_from_dict(command), read_only=False)
        if not outcome.accepted:
            raise LedgerRejected(outcome.reason)
        return outcome.record.to_dict() if outcome.record is not None else None

    async def read(self, vm: str) -> dict[str, Any] | None:
        """The VM's record, read linearizably."""
        from fabric.ledger.replicated import ReadVm

        outcome = await self._run(ReadVm(vm=vm), read_only=True)
        if not outcome.accepted:
            raise LedgerRejected(outcome.reason)
        return outcome.record.to_dict() if outcome.record is not None else None

    def on_replies(self, sender: NodeId, replies: list[ClientReply]) -> None:
        """Replies from replica `sender` (as the Ray call says)."""
        now = self._now_ms()
        for reply in replies:
            client = self._clients.get(getattr(reply, "client_id", ""))
            if client is None or not isinstance(reply, ClientReply):
                continue
            out = client.on_reply(sender, reply, now)
            self._send(out.sends)
            self._complete(client, out.done)

    def _complete(self, client: LedgerClient, done: Completion | None) -> None:
        if done is None:
            return
        future = self._waiting.get(client.client_id)
        if future is not None and not future.done():
            future.set_result(done)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            now = self._now_ms()
            for cid in list(self._waiting):
                client = self._clients[cid]
                out = client.tick(now)
                self._send(out.sends)
                self._complete(client, out.done)

    def close(self) -> None:
        """Stop ticking."""
        self._task.cancel()


class ReplicatedHandle:
    """The replicated ledger behind the LedgerHandle interface."""

    def __init__(self, service: LedgerService, config: LedgerConfig,
                 replica_actors: dict[NodeId, str]) -> None:
        self.service = service
        self._config = config
        self._replica_actors = replica_actors
        self._actors = _Actors()

    async def submit(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """Through consensus."""
        return await self.service.submit(command)

    async def read(self, vm: str) -> dict[str, Any] | None:
        """A linearizable read."""
        return await self.service.read(vm)

    async def _ask_all(self, method: str) -> list[Any]:
        async def one(name: str) -> Any:
            with contextlib.suppress(Exception):
                return await asyncio.wait_for(getattr(self._actors.get(name), method).remote(), 5.0)
            return None
        return list(await asyncio.gather(*(one(n) for n in self._replica_actors.values())))

    async def records(self) -> list[dict[str, Any]]:
        """The records of the replica that has applied the most (a status view; may lag by a beat)."""
        got = [r for r in await self._ask_all("consensus_records") if r is not None]
        if not got:
            raise LedgerUnavailable("no ledger replica answered")
        return max(got, key=lambda x: x[0])[1]

    async def describe(self) -> dict[str, Any]:
        """Protocol and every replica's status."""
        statuses = await self._ask_all("consensus_status")
        live = [s for s in statuses if s is not None]
        leaders = {s["leader"] for s in live if s["leader"] is not None}
        return {"kind": self._config.protocol, "replicas": len(self._replica_actors),
                "live_replicas": len(live), "leader": sorted(leaders)[0] if len(leaders) == 1 else None,
                "index": max((s["commit"] for s in live), default=0), "persistent":
                self._config.protocol == "raft", "vms": None, "statuses": statuses,
                "checked_at": time.time()}
