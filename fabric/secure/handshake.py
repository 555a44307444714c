"""The authenticated key exchange: X25519 ephemerals, signed by both Ed25519 identities (SIGMA-I).

Three messages, sans-IO (bytes in, bytes out); `|` is concatenation, th a
labelled SHA-256 transcript hash, both identities known in advance:

    hello     I -> R  version | 1 | H(context) | id_I | id_R | eph_I                  130 bytes
    reply     R -> I  version | 2 | eph_R | sig_R | mac_R                              130 bytes
    finished  I -> R  version | 3 | sig_I | mac_I                                      98 bytes

    th2   = H("transcript", hello, version | 2 | eph_R)     keys = schedule(X25519, th2)
    sig_R = Sign_R("responder signature" | th2)             mac_R = HMAC(finished_R, th2 | sig_R)
    th3   = H("transcript", hello, reply)
    sig_I = Sign_I("initiator signature" | th3)             mac_I = HMAC(finished_I, th3 | sig_I)

Each side signs a transcript holding both ephemeral keys, both identities and
the context, and checks the other's signature against the identity it
expected. The responder hands out keys only after `finished`, which only the
holder of eph_I's private key and id_I can produce for its fresh eph_R: a
replayed hello or finished fails there. The labels differ per role, so a
signature or MAC cannot be reflected. Why three messages: the initiator can
sign the responder's ephemeral key only after it has seen it.
"""

from __future__ import annotations

import hmac
import struct
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fabric.secure.errors import BadSignatureError, HandshakeError, SecureUsageError
from fabric.secure.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeIdentity, load_public_key
from fabric.secure.keys import LABEL, HandshakeSecrets, SessionKeys, derive_handshake_secrets, labelled_hash
from fabric.secure.memory_only import MemoryOnly

HANDSHAKE_VERSION = 1
MSG_HELLO, MSG_REPLY, MSG_FINISHED = 1, 2, 3
# A context names one migration attempt (see migration_context): a few hundred bytes.
CONTEXT_BYTES_MAX = 4096
MAC_BYTES = 32
HASH_BYTES = 32

_PREFIX = struct.Struct(">BB")
HELLO_BYTES = _PREFIX.size + HASH_BYTES + 3 * PUBLIC_KEY_BYTES
REPLY_BYTES = _PREFIX.size + PUBLIC_KEY_BYTES + SIGNATURE_BYTES + MAC_BYTES
FINISHED_BYTES = _PREFIX.size + SIGNATURE_BYTES + MAC_BYTES


class _State(Enum):
    START = "start"
    AWAIT_REPLY = "await-reply"
    AWAIT_FINISHED = "await-finished"
    DONE = "done"
    FAILED = "failed"


def migration_context(*, vm: str, epoch: int, source: str, destination: str) -> bytes:
    """The context bytes that bind a handshake to one migration attempt (the ledger never reuses epochs)."""
    if not vm or not source or not destination or not 1 <= epoch < 2**64:
        raise SecureUsageError(f"invalid migration context {vm!r}@{epoch} {source!r} -> {destination!r}")
    out = bytearray(b"novacron-migration")
    for name in (vm, source, destination):
        raw = name.encode()
        out += len(raw).to_bytes(2, "big") + raw  # length-prefixed: no two contexts encode alike
    out += epoch.to_bytes(8, "big")
    if len(out) > CONTEXT_BYTES_MAX:
        raise SecureUsageError(f"migration context is {len(out)} bytes, over {CONTEXT_BYTES_MAX}")
    return bytes(out)


def _check_setup(identity: NodeIdentity, peer_public: bytes, context: bytes) -> bytes:
    if not isinstance(identity, NodeIdentity):
        raise SecureUsageError(f"identity must be a NodeIdentity, got {type(identity).__name__}")
    try:
        load_public_key(peer_public)
    except BadSignatureError as e:
        raise SecureUsageError(f"peer public key: {e}") from e
    if bytes(peer_public) == identity.public_bytes:
        raise SecureUsageError("a node cannot open a channel to itself")
    if not isinstance(context, bytes) or not 1 <= len(context) <= CONTEXT_BYTES_MAX:
        raise SecureUsageError(f"context must be 1..{CONTEXT_BYTES_MAX} bytes")
    return labelled_hash(b"context", context)


def _ephemeral() -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _exchange(private: X25519PrivateKey, peer_ephemeral: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_ephemeral))
    except ValueError as e:  # a low-order point gives an all-zero secret, which OpenSSL refuses
        raise HandshakeError(f"peer's ephemeral key is unusable: {e}") from e


def _split(message: bytes, expected_type: int, size: int) -> memoryview:
    """The message's body after version and type; HandshakeError if it is not that message."""
    try:
        view = memoryview(message).cast("B")
    except TypeError:  # not a buffer, or not a contiguous one: the peer sent something else
        raise HandshakeError(f"handshake message must be bytes, got {type(message).__name__}") from None
    if len(view) != size:
        raise HandshakeError(f"handshake message type {expected_type} is {size} bytes, got {len(view)}")
    version, kind = _PREFIX.unpack_from(view)
    if version != HANDSHAKE_VERSION:
        raise HandshakeError(f"handshake version {version}, expected {HANDSHAKE_VERSION}")
    if kind != expected_type:
        raise HandshakeError(f"handshake message type {kind}, expected {expected_type}")
    return view[_PREFIX.size:]


def _verify(public: bytes, data: bytes, signature: bytes, who: str) -> None:
    try:
        NodeIdentity.verify(public, data, signature)
    except BadSignatureError as e:
        raise HandshakeError(f"{who}'s signature does not verify: wrong peer, tampered or "
                             f"replayed message, or another context") from e


def _check_mac(key: bytes, data: bytes, mac: bytes, who: str) -> None:
    if not hmac.compare_digest(hmac.digest(key, data, "sha256"), mac):
        raise HandshakeError(f"{who}'s finished MAC does not verify: it derived other keys")


class HandshakeInitiator(MemoryOnly):
    """The side that opens the channel (the migration's source): hello(), then finish(reply)."""

    def __init__(self, identity: NodeIdentity, peer_public: bytes, context: bytes) -> None:
        self._context_hash = _check_setup(identity, peer_public, context)
        self._identity = identity
        self._peer_public = bytes(peer_public)
        self._ephemeral: X25519PrivateKey | None
        self._ephemeral, self._ephemeral_public = _ephemeral()
        self._hello = _PREFIX.pack(HANDSHAKE_VERSION, MSG_HELLO) + self._context_hash + \
            identity.public_bytes + self._peer_public + self._ephemeral_public
        assert len(self._hello) == HELLO_BYTES
        self._state = _State.START

    def hello(self) -> bytes:
        """The first message, to send to the responder; once."""
        if self._state is not _State.START:
            raise SecureUsageError(f"hello() was already called (handshake is {self._state.value})")
        self._state = _State.AWAIT_REPLY
        return self._hello

    def finish(self, reply: bytes) -> tuple[bytes, SessionKeys]:
        """Check the responder's reply: the `finished` message to send back, and the session keys."""
        if self._state is not _State.AWAIT_REPLY:
            raise HandshakeError(f"unexpected reply: handshake is {self._state.value}")
        self._state = _State.FAILED  # until everything below has passed
        private, self._ephemeral = self._ephemeral, None  # used once, whatever happens
        assert private is not None
        body = _split(reply, MSG_REPLY, REPLY_BYTES)
        peer_ephemeral = bytes(body[:PUBLIC_KEY_BYTES])
        sig_r = bytes(body[PUBLIC_KEY_BYTES:PUBLIC_KEY_BYTES + SIGNATURE_BYTES])
        mac_r = bytes(body[PUBLIC_KEY_BYTES + SIGNATURE_BYTES:])
        reply = bytes(reply)
        th2 = labelled_hash(b"transcript", self._hello, reply[:_PREFIX.size + PUBLIC_KEY_BYTES])
        # The signature first: it says whether the reply comes from the expected peer at all.
        _verify(self._peer_public, LABEL + b"responder signature" + th2, sig_r, "responder")
        secrets = derive_handshake_secrets(_exchange(private, peer_ephemeral), th2)
        _check_mac(secrets.responder_finished, LABEL + b"responder finished" + th2 + sig_r, mac_r,
                   "responder")
        th3 = labelled_hash(b"transcript", self._hello, reply)
        sig_i = self._identity.sign(LABEL + b"initiator signature" + th3)
        mac_i = hmac.digest(secrets.initiator_finished, LABEL + b"initiator finished" + th3 + sig_i,
                            "sha256")
        finished = _PREFIX.pack(HANDSHAKE_VERSION, MSG_FINISHED) + sig_i + mac_i
        assert len(finished) == FINISHED_BYTES
        self._state = _State.DONE
        return finished, SessionKeys(role="initiator", secrets=secrets)


class HandshakeResponder(MemoryOnly):
    """The side that accepts the channel (the destination): respond(hello), then finish(finished)."""

    def __init__(self, identity: NodeIdentity, initiator_public: bytes, context: bytes) -> None:
        self._context_hash = _check_setup(identity, initiator_public, context)
        self._identity = identity
        self._initiator_public = bytes(initiator_public)
        self._state = _State.START
        self._secrets: HandshakeSecrets | None = None
        self._th3 = b""

    def respond(self, hello: bytes) -> bytes:
        """Check the initiator's hello and return the reply; a second hello is refused."""
        if self._state is not _State.START:
            raise HandshakeError(f"unexpected hello: handshake is {self._state.value} "
                                 f"(a replayed or duplicated hello)")
        self._state = _State.FAILED  # until everything below has passed
        body = _split(hello, MSG_HELLO, HELLO_BYTES)
        context_hash = bytes(body[:HASH_BYTES])
        initiator_id, responder_id, initiator_ephemeral = (
            bytes(body[HASH_BYTES + i * PUBLIC_KEY_BYTES:HASH_BYTES + (i + 1) * PUBLIC_KEY_BYTES])
            for i in range(3))
        # Early, readable refusals; the signatures over the transcript would catch them anyway.
        if not hmac.compare_digest(context_hash, self._context_hash):
            raise HandshakeError("hello binds another context (another migration, epoch or pair)")
        if responder_id != self._identity.public_bytes:
            raise HandshakeError("hello is addressed to another identity")
        if initiator_id != self._initiator_public:
            raise HandshakeError("hello comes from an unexpected identity")
        private, ephemeral_public = _ephemeral()
        shared = _exchange(private, initiator_ephemeral)
        del private  # the ephemeral key is used once
        hello = bytes(hello)
        reply_head = _PREFIX.pack(HANDSHAKE_VERSION, MSG_REPLY) + ephemeral_public
        th2 = labelled_hash(b"transcript", hello, reply_head)
        secrets = derive_handshake_secrets(shared, th2)
        sig_r = self._identity.sign(LABEL + b"responder signature" + th2)
        mac_r = hmac.digest(secrets.responder_finished, LABEL + b"responder finished" + th2 + sig_r,
                            "sha256")
        reply = reply_head + sig_r + mac_r
        assert len(reply) == REPLY_BYTES
        self._secrets = secrets
        self._th3 = labelled_hash(b"transcript", hello, reply)
        self._state = _State.AWAIT_FINISHED
        return reply

    def finish(self, finished: bytes) -> SessionKeys:
        """Check the initiator's finished message; the session keys once it proves who it is."""
        if self._state is not _State.AWAIT_FINISHED:
            raise HandshakeError(f"unexpected finished: handshake is {self._state.value}")
        self._state = _State.FAILED
        secrets, self._secrets = self._secrets, None
        assert secrets is not None
        body = _split(finished, MSG_FINISHED, FINISHED_BYTES)
        sig_i, mac_i = bytes(body[:SIGNATURE_BYTES]), bytes(body[SIGNATURE_BYTES:])
        _verify(self._initiator_public, LABEL + b"initiator signature" + self._th3, sig_i, "initiator")
        _check_mac(secrets.initiator_finished, LABEL + b"initiator finished" + self._th3 + sig_i, mac_i,
                   "initiator")
        self._state = _State.DONE
        return SessionKeys(role="responder", secrets=secrets)
