"""Every ledger protocol as a running fabric builds it: one replica per node from real keys (no Ray).

The nodes here are in-process, wired by a tiny deterministic network, but each
replica is made by `build_replica` exactly as a NodeActor makes it: its own
Ed25519 key, the others' public keys, ProBFT's RSA-FDH-VRF keys swapped in band,
and ACP switching protocols under a stream of migrations.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fabric.consensus.api import NodeId, Ready
from fabric.consensus.signing import Ed25519Signer
from fabric.errors import ConfigError
from fabric.ledger import LedgerClient
from fabric.ledger.hosting import LedgerConfig, build_replica, client_policy
from fabric.ledger.node_cluster import VrfKeyAnnounce, VrfKeyExchange
from fabric.ledger.replicated import LedgerStateMachine
from fabric.ledger.state import Outcome

CLIENT = "driver@1#0"
STEP_MS = 5


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class Fabric:
    """n nodes' replicas and one ledger client, on a lossless network with one step of delay."""

    def __init__(self, protocol: str, tmp: Path, n: int = 4, options: dict[str, Any] | None = None) -> None:
        self.config = LedgerConfig(protocol=protocol, options=options or {}).validate()  # type: ignore[arg-type]
        self.ids = self.config.replica_ids(n)
        keys = {rid: Ed25519PrivateKey.generate() for rid in self.ids}
        client_key = Ed25519PrivateKey.generate()
        self.now = 0
        self.replicas: dict[NodeId, Any] = {}
        self.storages: dict[NodeId, Any] = {}
        for rid in self.ids:
            rep, storage = build_replica(
                self.config, rid=rid, replica_ids=self.ids, state_machine=LedgerStateMachine(),
                signer=Ed25519Signer(rid, keys[rid]), replica_keys={r: _raw(k) for r, k in keys.items()},
                client_keys={CLIENT: _raw(client_key)}, storage_dir=tmp, now_ms=0, seed=7)
            self.replicas[rid], self.storages[rid] = rep, storage
        policy = client_policy(self.config, self.ids)
        self.client = LedgerClient(CLIENT, policy,
                                   signer=Ed25519Signer(CLIENT, client_key) if policy.sign_requests else None)
        self.wire: deque[tuple[NodeId, Any]] = deque()
        self.done: Any = None

    def _handle(self, rid: NodeId, ready: Ready) -> None:
        if ready.persist is not None:
            self.storages[rid].save(ready.persist)
        self.wire.extend(ready.messages)
        for reply in ready.replies:
            self._client(self.client.on_reply(rid, reply, self.now))

    def _client(self, out: Any) -> None:
        for to, req in out.sends:
            self.wire.append((to, req))
        if out.done is not None:
            self.done = out.done

    def step(self) -> None:
        """One step of time: everything in flight arrives, then timers."""
        self.now += STEP_MS
        inflight, self.wire = self.wire, deque()
        for to, msg in inflight:
            rep = self.replicas[to]
            self._handle(to, rep.tick(self.now))
            if type(msg).__name__ == "Request":
                self._handle(to, rep.read(msg) if msg.read_only else rep.propose(msg))
            else:
                self._handle(to, rep.step(msg))
        for rid, rep in self.replicas.items():
            self._handle(rid, rep.tick(self.now))
        self._client(self.client.tick(self.now))

    def run(self, out: Any, limit_ms: int = 30_000) -> Outcome:
        """Submit and wait for the result."""
        self.done = None
        self._client(out)
        start = self.now
        while self.done is None:
            assert self.now - start < limit_ms, "no result"
            self.step()
        assert self.done.status == "ok", self.done
        return self.done.result

    def settle(self, ms: int) -> None:
        """Let time pass."""
        for _ in range(ms // STEP_MS):
            self.step()


def migrate(fab: Fabric, vm: str, to: str) -> Outcome:
    rec = fab.run(fab.client.read(vm, fab.now)).record
    begun = fab.run(fab.client.begin(vm, rec.owner, to, fab.now))
    assert begun.accepted, begun
    done = fab.run(fab.client.commit(vm, begun.record.migration.epoch, fab.now))
    assert done.accepted and done.record.owner == to, done
    return done


@pytest.mark.parametrize("protocol", ["pbft", "probft", "bullshark", "tpbft"])
def test_each_bft_protocol_runs_from_real_keys(protocol: str, tmp_path: Path) -> None:
    fab = Fabric(protocol, tmp_path)
    assert fab.run(fab.client.register("vm-1", "dc1", fab.now)).accepted
    for to in ("dc2", "dc3"):
        migrate(fab, "vm-1", to)
    fab.settle(200)
    if protocol == "probft":
        for rep in fab.replicas.values():  # every node learned every VRF key, in band, signed
            assert isinstance(rep, VrfKeyExchange) and rep.missing() == ()
    rec = fab.run(fab.client.read("vm-1", fab.now)).record
    assert rec.owner == "dc3" and rec.epoch == 3  # registered at 1, one epoch per migration


def test_a_vrf_key_is_learned_once_and_only_from_its_node(tmp_path: Path) -> None:
    fab = Fabric("probft", tmp_path)
    fab.settle(50)
    a, b = fab.replicas[0], fab.replicas[1]
    assert a.missing() == () and b.missing() == ()
    theirs = b._own
    forged = dataclasses.replace(theirs, src=2)  # node 1's key claimed for node 2, its signature
    a.tick(fab.now)
    before = a._ring._keys[2]
    assert a.step(forged).messages == () and a._ring._keys[2] == before
    assert a.counters["dropped_bad_vrf_announce"] == 1
    other = VrfKeyAnnounce(src=1, key=fab.replicas[3]._own.key)  # a new key for node 1: unsigned
    a.step(other)
    assert a._ring._keys[1] == fab.replicas[1]._keys.vrf.public_key  # the first key stays


def test_acp_switches_protocol_in_the_middle_of_migrations_and_loses_nothing(tmp_path: Path) -> None:
    fab = Fabric("acp", tmp_path, options={"internet": "probft", "hybrid": "bullshark"})
    assert all(rep.inner.protocol == "raft" for rep in fab.replicas.values())
    assert fab.run(fab.client.register("vm-1", "dc1", fab.now)).accepted
    owners = ["dc1"]
    for k, mode in enumerate(("internet", "hybrid", "datacenter", "internet")):
        # A migration begins in one era; the switch comes between its Begin and its Commit.
        rec = fab.run(fab.client.read("vm-1", fab.now)).record
        to = "dc2" if rec.owner != "dc2" else "dc3"
        begun = fab.run(fab.client.begin("vm-1", rec.owner, to, fab.now))
        for rid, rep in fab.replicas.items():
            fab._handle(rid, rep.tick(fab.now))
            fab._handle(rid, rep.change_mode(mode))
        done = fab.run(fab.client.commit("vm-1", begun.record.migration.epoch, fab.now))
        assert done.accepted and done.record.owner == to and done.record.epoch == k + 2
        owners.append(to)
    fab.settle(500)
    eras = {rep.inner.era for rep in fab.replicas.values()}
    assert eras == {4}, eras
    assert {rep.inner.protocol for rep in fab.replicas.values()} == {"probft"}
    for rep in fab.replicas.values():  # every replica's ledger: the last owner, one epoch per migration
        rec = rep.app.ledger.record("vm-1")
        assert rec.owner == owners[-1] and rec.epoch == 5 and rec.migration is None


def test_ledger_configs_name_every_protocol_and_check_acp_options() -> None:
    for p in ("raft", "pbft", "probft", "bullshark", "tpbft", "acp"):
        LedgerConfig(protocol=p).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        LedgerConfig(protocol="paxos").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        LedgerConfig(protocol="acp", options={"internet": "paxos"}).validate()
    with pytest.raises(ConfigError):
        LedgerConfig(protocol="bullshark", replicas=("a", "b", "c")).validate()
    acp = LedgerConfig(protocol="acp", options={"hybrid": "probft"})
    assert client_policy(acp, (0, 1, 2, 3)).replies_needed == 3  # ProBFT's fencing quorum, 2f+1
    assert client_policy(LedgerConfig(protocol="bullshark"), (0, 1, 2, 3)).replies_needed == 2


def test_acp_follows_the_links_unless_told_otherwise() -> None:
    assert LedgerConfig(protocol="acp").follows_links
    assert not LedgerConfig(protocol="acp", mode_source="manual").follows_links
    assert not LedgerConfig(protocol="raft").follows_links  # only ACP has modes
    with pytest.raises(ConfigError, match="mode_source"):
        LedgerConfig.from_dict({"protocol": "acp", "mode_source": "sometimes"})
    with pytest.raises(ConfigError, match="link_probe_s"):
        LedgerConfig.from_dict({"protocol": "acp", "link_probe_s": 0.01})
