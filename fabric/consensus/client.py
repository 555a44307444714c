"""The client side of every protocol, sans-IO: one request outstanding, retries, redirection.

A shell gives it an operation, the replies that come back, and ticks; it
returns the requests to send and, once enough replicas agree, the result:

    out = client.submit(op, now_ms)            # -> out.sends: [(replica, Request)]
    out = client.on_reply(sender, reply, now)  # -> out.done once the result is known
    out = client.tick(now_ms)                  # -> retransmissions after a timeout

`sender` is the replica the authenticated channel says the reply came from. The
request keeps its (client_id, request_id) across retries, so the replicated
state machine applies it once however often it is resent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fabric.consensus.api import ClientPolicy, ClientReply, NodeId, Request
from fabric.consensus.canonical import encode
from fabric.consensus.errors import ClientBusyError
from fabric.consensus.signing import Signer
from fabric.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Retry limits of a client; `validate()` says how to fix a bad value."""

    # First retransmission after this long without a result: a few times a
    # datacenter round trip plus a commit; the backoff doubles up to the cap.
    retry_ms: int = 150
    retry_ms_max: int = 1_200
    # Attempts before the operation is given up with its outcome unknown.
    attempts_max: int = 100
    # Redirects followed at once within one attempt; more wait for the timer,
    # so two replicas naming each other cannot make the client spin.
    redirects_per_attempt_max: int = 3

    def validate(self) -> ClientConfig:
        """Return self, or raise ConfigError naming the bad value."""
        if not 1 <= self.retry_ms <= 600_000:
            raise ConfigError(f"client retry_ms={self.retry_ms}: use 1..600000")
        if not self.retry_ms <= self.retry_ms_max <= 3_600_000:
            raise ConfigError(f"client retry_ms_max={self.retry_ms_max}: use retry_ms..3600000")
        if not 1 <= self.attempts_max <= 100_000:
            raise ConfigError(f"client attempts_max={self.attempts_max}: use 1..100000")
        if not 0 <= self.redirects_per_attempt_max <= 100:
            raise ConfigError(f"client redirects_per_attempt_max={self.redirects_per_attempt_max}: "
                              "use 0..100")
        return self


@dataclass(frozen=True, kw_only=True)
class Completion:
    """An operation's end: its result, or "gave-up" / "abandoned" (it may or may not have taken effect)."""

    request: Request
    status: Literal["ok", "gave-up", "abandoned"]
    result: Any
    invoked_ms: int
    completed_ms: int
    attempts: int


@dataclass(frozen=True, kw_only=True)
class ClientOutput:
    """What the client asks the shell to do."""

    sends: tuple[tuple[NodeId, Request], ...] = ()
    done: Completion | None = None


_NOTHING = ClientOutput()


class ConsensusClient:
    """One client of a replicated state machine (see the module doc)."""

    def __init__(self, client_id: str, policy: ClientPolicy, *, config: ClientConfig | None = None,
                 signer: Signer | None = None) -> None:
        self.client_id = client_id
        self._policy = policy
        self._config = (config or ClientConfig()).validate()
        if policy.sign_requests and signer is None:
            raise ConfigError(f"client {client_id}: this protocol needs signed requests; pass a signer")
        self._signer = signer
        self._next_request_id = 1
        self._target = policy.replicas[0]  # who we believe leads
        self._view = 0
        self._request: Request | None = None
        self._invoked_ms = 0
        self._deadline_ms: int | None = None
        self._attempts = 0
        self._redirects = 0
        # result -> replicas that answered it, for the current request
        self._votes: dict[Any, set[NodeId]] = {}
        self.counters: dict[str, int] = {}

    @property
    def outstanding(self) -> Request | None:
        """The request waiting for its result, if any."""
        return self._request

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def submit(self, op: Any, now_ms: int, *, read_only: bool = False) -> ClientOutput:
        """Start an operation; ClientBusyError if the previous one has not finished."""
        if self._request is not None:
            raise ClientBusyError(f"client {self.client_id} still waits for request "
                                  f"{self._request.request_id}")
        req = Request(client_id=self.client_id, request_id=self._next_request_id, op=op, read_only=read_only)
        if self._signer is not None:
            req = Request(client_id=req.client_id, request_id=req.request_id, op=op, read_only=read_only,
                          signature=self._signer.sign(encode(req.signed_part())))
        self._next_request_id += 1
        self._request = req
        self._invoked_ms = now_ms
        self._attempts = 1
        self._redirects = 0
        self._votes = {}
        self._deadline_ms = now_ms + self._config.retry_ms
        return ClientOutput(sends=((self._target, req),))

    def on_reply(self, sender: NodeId, reply: ClientReply, now_ms: int) -> ClientOutput:
        """Take a replica's reply; returns the completion once enough replicas agree."""
        req = self._request
        if req is None or reply.client_id != self.client_id or reply.request_id != req.request_id:
            self._count("reply_stale")
            return _NOTHING
        if sender != reply.replica or sender not in self._policy.replicas:
            self._count("reply_forged")  # the channel says it came from someone else
            return _NOTHING
        if reply.view > self._view:
            self._view = reply.view
            if self._policy.broadcast_on_retry:  # view-based protocols: primary = view mod n
                self._target = self._policy.replicas[reply.view % len(self._policy.replicas)]
        if reply.status in ("redirect", "retry"):
            hint = reply.leader_hint
            if reply.status == "redirect" and hint is not None and hint in self._policy.replicas \
                    and hint != sender:
                self._target = hint
                if self._redirects < self._config.redirects_per_attempt_max:
                    self._redirects += 1
                    return ClientOutput(sends=((hint, req),))
            # No leader known there (an election is on) or it is busy: try again after
            # retry_ms rather than after the full backoff.
            self._deadline_ms = min(self._deadline_ms or now_ms, now_ms + self._config.retry_ms)
            return _NOTHING
        try:
            voters = self._votes.setdefault(reply.result, set())
        except TypeError:
            self._count("reply_unhashable")  # a lying replica's junk result
            return _NOTHING
        voters.add(sender)
        if not self._policy.broadcast_on_retry:
            self._target = sender  # it answered, so it leads
        if len(voters) < self._policy.replies_needed:
            return _NOTHING
        return ClientOutput(done=self._finish("ok", reply.result, now_ms))

    def abandon(self, now_ms: int) -> Completion | None:
        """Stop waiting for the current request (the caller timed it out); its outcome stays unknown.

        It may still take effect later; a late reply to it is ignored. The next
        request gets a new id, so the state machine never confuses the two.
        """
        if self._request is None:
            return None
        self._count("abandoned")
        return self._finish("abandoned", None, now_ms)

    def _finish(self, status: Literal["ok", "gave-up", "abandoned"], result: Any, now_ms: int) -> Completion:
        assert self._request is not None
        done = Completion(request=self._request, status=status, result=result, invoked_ms=self._invoked_ms,
                          completed_ms=now_ms, attempts=self._attempts)
        self._request = None
        self._deadline_ms = None
        self._votes = {}
        return done

    def tick(self, now_ms: int) -> ClientOutput:
        """Retransmit if the current request has waited too long; give up after attempts_max."""
        req = self._request
        if req is None or self._deadline_ms is None or now_ms < self._deadline_ms:
            return _NOTHING
        if self._attempts >= self._config.attempts_max:
            return ClientOutput(done=self._finish("gave-up", None, now_ms))
        self._attempts += 1
        self._redirects = 0
        backoff = min(self._config.retry_ms << min(self._attempts - 1, 20), self._config.retry_ms_max)
        self._deadline_ms = now_ms + backoff
        self._count("retransmissions")
        replicas = self._policy.replicas
        if self._policy.broadcast_on_retry:
            return ClientOutput(sends=tuple((r, req) for r in replicas))
        self._target = replicas[(replicas.index(self._target) + 1) % len(replicas)]
        return ClientOutput(sends=((self._target, req),))

    def deadline_ms(self) -> int | None:
        """When `tick` next has work, or None."""
        return self._deadline_ms
