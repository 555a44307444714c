"""The source side of one migration: carries out the engine's commands over the secure transport.

Setup opens the channel (a SIGMA-I handshake through the destination actor),
probes the link, and picks the codec profile from the measured mode. Then
every batch the engine encodes is sealed, chunked by the transport and
carried to the destination over the (emulated) link; acks and batch results
come back the same way. Ledger commands go to the ledger actor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.link_probe import packet_train
from actors.transfer import LinkShare, OutgoingTransfer
from fabric.clock import Clock
from fabric.errors import UnknownVmError
from fabric.ledger import AbortMigration, CommitMigration, command_to_dict
from fabric.memory import RunState, Vm
from fabric.migration import MigrationConfig, MigrationEngine
from fabric.migration import commands as cmd
from fabric.migration.encoders import make_encoder, profile_for
from fabric.migration.framing import seal_batch
from fabric.migration.report import MB
from fabric.secure import HandshakeInitiator, NodeIdentity, SecureChannel, migration_context
from fabric.transport import (
    LinkSpec,
    ModeDetector,
    ProbeResult,
    TransportConfig,
    TransportSender,
)
from fabric.wire import BatchHeader

log = logging.getLogger("novacron.outgoing")

ENGINE_CRASHES_MAX = 3  # engine exceptions tolerated per migration before a hard abort


@dataclass
class Peer:
    """What the source needs of the destination."""

    name: str
    actor: Any
    public_key: bytes


class OutgoingMigration:
    """One migration from this node: the engine, its channel, its transfer."""

    def __init__(self, *, node: str, identity: NodeIdentity, engine: MigrationEngine, vm: Vm, epoch: int,
                 source_epoch: int, peer: Peer, ledger: Any, clock: Clock, config: MigrationConfig,
                 link_spec: LinkSpec | None, link: LinkShare,
                 check_owner: Callable[[str, int], Awaitable[None]],
                 release: Callable[[], None], describe_error: Callable[[BaseException], str]) -> None:
        self.node = node
        self.engine = engine
        self.vm = vm
        self.epoch = epoch  # the migration's epoch
        self.source_epoch = source_epoch  # the epoch this node holds the VM at
        self.peer = peer
        self._identity = identity
        self._ledger = ledger
        self._clock = clock
        self._config = config
        self.link_spec = link_spec
        self._link = link
        self._flow = link.join()
        self._check_owner = check_owner
        self._release = release
        self._describe = describe_error
        mbps = config.max_bandwidth_mbps
        self.transport_config = TransportConfig(
            max_bandwidth_bytes_per_s=mbps * MB if mbps is not None else None).validate()
        self._channel: SecureChannel | None = None
        self.transfer: OutgoingTransfer | None = None
        self._last_transfer: OutgoingTransfer | None = None
        self._mode: str | None = None
        self._detector = ModeDetector()

    # -- the command loop -------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Carry out the engine's commands until it finishes; the report."""
        engine = self.engine
        crashes = 0
        try:
            while True:
                try:
                    self._observe_link()
                    # Encoding takes tens of ms of CPU: off the loop that paces chunks and takes acks.
                    command = await asyncio.to_thread(engine.next_command, self._clock.now())
                    if isinstance(command, cmd.Finished):
                        return self._final_report()
                    if isinstance(command, cmd.Wait):
                        await self._wait(command.until)
                        continue
                    try:
                        result = await asyncio.wait_for(self._execute(command), self._config.peer_timeout_s)
                    except Exception as e:  # the peer, the ledger, the link or this node's I/O failed
                        await self._drop_transfer()
                        engine.command_failed(self._describe(e), self._clock.now())
                        continue
                    if isinstance(command, cmd.AwaitAck):
                        engine.batch_acked(result["seq"], self._clock.now(),
                                           np.asarray(result["missing"], dtype=np.uint32))
                    elif not isinstance(command, cmd.SendBatch):
                        engine.command_done(self._clock.now(), result)
                except Exception as e:  # the engine itself raised
                    crashes += 1
                    log.exception("migration engine error (%d)", crashes)
                    if crashes > ENGINE_CRASHES_MAX:
                        return await self._hard_abort(e)
                    await self._drop_transfer()
                    engine.crash(e, self._clock.now())
        finally:
            await self._drop_transfer()
            self._link.leave(self._flow)

    async def _wait(self, until: float) -> None:
        """Pacing by the engine (a fault plan's delay): hand over any results meanwhile."""
        while self.transfer is not None and self.transfer.result_ready():
            r = self.transfer.take_result()
            self.engine.batch_acked(r["seq"], self._clock.now(), np.asarray(r["missing"], dtype=np.uint32))
        await asyncio.sleep(max(0.0, until - self._clock.now()))

    async def _execute(self, command: Any) -> Any:
        vm, epoch, dst = self.engine.report.vm, self.epoch, self.peer.actor
        if isinstance(command, cmd.PrepareDestination):
            return await self._open(command)
        if isinstance(command, cmd.SendBatch):
            assert self._channel is not None and self.transfer is not None
            header = BatchHeader(vm=vm, epoch=epoch, round=command.round, seq=command.seq)
            message = await asyncio.to_thread(seal_batch, self._channel, header, command.batch)
            faults = self.engine.faults
            if faults.tamper_batch_seq == command.seq:
                message = message.copy()
                message[message.size // 2] ^= 0x10  # one bit in the ciphertext
            # Transport message ids are 2 x seq: room for a fault plan's replayed copy.
            if faults.drop_batch_seq == command.seq:
                return None  # lost for good: the destination's stream has a hole it must refuse
            await self.transfer.send(2 * command.seq, message)
            if faults.replay_batch_seq == command.seq:
                await self.transfer.send(2 * command.seq + 1, message)
            return None
        if isinstance(command, cmd.AwaitAck):
            assert self.transfer is not None
            return await self.transfer.next_result(self._config.peer_timeout_s)
        if isinstance(command, cmd.PauseSource):
            return self.vm.pause(self._clock.now())
        if isinstance(command, cmd.ThrottleSource):
            self.vm.set_throttle(command.pct)
            return None
        if isinstance(command, cmd.VerifyDestination):
            return await dst.finish_incoming.remote(vm, epoch, command.device_state, command.full)
        if isinstance(command, cmd.StartPostcopy):
            self._check_link()
            return await dst.start_postcopy.remote(vm, epoch, command.device_state, command.missing,
                                                   command.fault_retry_s, command.recovery_s_max)
        if isinstance(command, cmd.VerifyReceived):
            self._check_link()
            return await dst.finish_postcopy.remote(vm, epoch)
        if isinstance(command, cmd.ReopenChannel):
            return await self._reopen()
        if isinstance(command, cmd.CommitOwnership):
            return await self._ledger.submit(command_to_dict(CommitMigration(vm=vm, epoch=command.epoch)))
        if isinstance(command, cmd.QueryOwnership):
            rec = await self._ledger.read(vm)
            if rec is None:
                raise UnknownVmError(f"ledger has no record of {vm}")
            return rec["owner"], rec["epoch"]
        if isinstance(command, cmd.ActivateDestination):
            result = await dst.activate_incoming.remote(vm, command.epoch)
            if self.engine.faults.link_down_in_postcopy_s and self.engine.report.postcopy:
                self._link.set_down(self._clock.now() + self.engine.faults.link_down_in_postcopy_s)
            return result
        if isinstance(command, cmd.ReleaseSource):
            self.vm.stop()
            self._release()
            return None
        if isinstance(command, cmd.AbortOwnership):
            return await self._ledger.submit(command_to_dict(
                AbortMigration(vm=vm, epoch=command.epoch, reason=command.reason[:500])))
        if isinstance(command, cmd.DiscardDestination):
            return await dst.discard_incoming.remote(vm, command.epoch)
        if isinstance(command, cmd.ResumeSource):
            await self._check_owner(vm, self.source_epoch)
            self.vm.resume(self._clock.now())
            return None
        raise AssertionError(f"unhandled command {command}")

    # -- setup: channel, probe, transfer ------------------------------------------------

    async def _open(self, command: cmd.PrepareDestination) -> None:
        """Handshake through the destination, probe the link, start the transfer."""
        vm, epoch, dst = command.vm, command.epoch, self.peer.actor
        initiator = self._initiator()
        reply, holdings = await dst.prepare_incoming.remote(vm, epoch, command.pages, self.node,
                                                             initiator.hello())
        await self._finish_handshake(initiator, reply)
        probe = await self._probe()
        self._start_transfer(probe)
        if probe is not None:
            self._detector.classify(probe.rtt_s, probe.bandwidth_bytes_per_s * 8)
        self.engine.encoder.add_destination_holdings(holdings)
        self._observe_link()

    async def _reopen(self) -> None:
        """Post-copy lost its path: a new handshake, a fresh stream (codec and sequence from 0)."""
        await self._drop_transfer()
        self._check_link()
        vm, epoch, dst = self.engine.report.vm, self.epoch, self.peer.actor
        initiator = self._initiator()
        reply = await dst.reopen_incoming.remote(vm, epoch, initiator.hello())
        await self._finish_handshake(initiator, reply)
        self._start_transfer(None)
        self.engine.reset_stream(make_encoder(self._config, self.vm.memory.pages, self._mode or "datacenter"))

    def _initiator(self) -> HandshakeInitiator:
        context = migration_context(vm=self.engine.report.vm, epoch=self.epoch, source=self.node,
                                    destination=self.peer.name)
        return HandshakeInitiator(self._identity, self.peer.public_key, context)

    async def _finish_handshake(self, initiator: HandshakeInitiator, reply: bytes) -> None:
        finished, keys = initiator.finish(reply)
        await self.peer.actor.confirm_incoming.remote(self.engine.report.vm, self.epoch, finished,
                                                      self.transport_config.to_dict())
        self._channel = SecureChannel(keys, role="initiator")

    def _start_transfer(self, probe: ProbeResult | None) -> None:
        vm, epoch, dst = self.engine.report.vm, self.epoch, self.peer.actor
        sender = TransportSender(self.transport_config, now=self._clock.now(), probe=probe,
                                 mode_detector=self._detector)
        self.transfer = OutgoingTransfer(
            sender=sender, link=self._link, flow=self._flow, clock=self._clock,
            deliver=lambda chunks: dst.receive_chunks.remote(vm, epoch, chunks),
            fetch_results=lambda timeout_s: dst.await_results.remote(vm, epoch, timeout_s))

    def _check_link(self) -> None:
        """Control messages cross the same (emulated) link: a partition stops them too."""
        if self._link.is_down(self._clock.now()):
            raise ConnectionError("the emulated link to the destination is down")

    def request_pages(self, pages: list[int]) -> None:
        """The destination faulted on `pages` in post-copy: send them ahead of the rest."""
        self.engine.request_pages(np.asarray(pages, dtype=np.int64), self._clock.now())

    async def _probe(self) -> ProbeResult | None:
        """The setup probe: a packet train to the destination (actors/link_probe.py)."""
        dst, vm, epoch = self.peer.actor, self.engine.report.vm, self.epoch
        probe = await packet_train(self._link, self._flow, self._clock,
                                   lambda payload: dst.probe.remote(vm, epoch, payload))
        self.engine.report.transport["probe"] = (
            {"bandwidth_bytes_per_s": probe.bandwidth_bytes_per_s, "rtt_s": probe.rtt_s}
            if probe is not None else None)
        return probe

    def _observe_link(self) -> None:
        """Feed the transport's estimates to the engine; switch the codec profile when the mode changes."""
        if self.transfer is None:
            return
        sender = self.transfer.sender
        est = sender.estimator
        self.engine.observe_link(est.bandwidth_bytes_per_s, est.rtt_s)
        mode = sender.mode.value if sender.mode is not None else None
        if mode is not None and mode != self._mode:
            self._mode = mode
            self.engine.observe_mode(mode)
            self.engine.encoder.set_profile(profile_for(mode, self._config))

    async def _drop_transfer(self) -> None:
        if self.transfer is not None:
            self._last_transfer = self.transfer
            await self.transfer.close()
            self.transfer = None

    # -- ending -----------------------------------------------------------------------

    def _final_report(self) -> dict[str, Any]:
        report = self.engine.report
        transfer = self.transfer or self._last_transfer
        if transfer is not None:
            report.transport = {**report.transport, **transfer.sender.stats().to_dict(),
                                **transfer.stats.to_dict()}
            report.link_bytes = transfer.stats.bytes_sent
        report.link_emulated = self.link_spec is not None
        if self.link_spec is not None:
            rate = self.link_spec.bandwidth_bps / 8
            report.link_bandwidth_mbps = rate / MB
            rounds = [s for s in report.round_stats if not s.final and s.duration_s > 0]
            if rounds:
                busiest = max(rounds, key=lambda s: s.wire_bytes)
                report.link_utilisation = busiest.wire_bytes / busiest.duration_s / rate
            transfer_s = sum(s.duration_s for s in report.round_stats)
            if transfer_s > 0:
                report.effective_rate = report.raw_bytes / transfer_s / rate
        return report.to_dict()

    async def _hard_abort(self, error: BaseException) -> dict[str, Any]:
        """The engine keeps failing: abort without it, step by step, best effort."""
        report = self.engine.report
        report.status = "aborted"
        report.abort_reason = f"engine failed repeatedly: {error!r}"
        report.vm_location = self.node
        for step in (self._ledger.submit(command_to_dict(
                         AbortMigration(vm=report.vm, epoch=self.epoch, reason="engine failure"))),
                     self.peer.actor.discard_incoming.remote(report.vm, self.epoch)):
            try:
                await step
            except Exception as e:
                report.abort_reason += f"; {self._describe(e)}"
        if self.vm.state is RunState.PAUSED:
            try:
                await self._check_owner(report.vm, self.self.source_epoch)
                self.vm.resume(self._clock.now())
            except Exception as e:
                report.status = "failed"
                report.vm_location = ""
                report.abort_reason += f"; source could not resume: {self._describe(e)}"
        return report.to_dict()
