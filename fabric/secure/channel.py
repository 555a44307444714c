"""SecureChannel: seals and opens the frames of one migration with AES-256-GCM (layout in `frame`).

Each direction has its own traffic secret, nonce salt and sequence numbers;
the AES key of a direction ratchets every FRAMES_PER_KEY frames. `open`
checks the header and the replay window, then authenticates and decrypts;
plaintext leaves it only once the tag verified, and a refused frame changes
no state, so a forged frame can neither move the window nor close the channel.

Ray may run an actor's calls on several threads (max_concurrency > 1), so
numbering and the window change under a lock: two threads never share a
nonce, nor both accept one frame. Encryption itself runs outside the lock.
"""

from __future__ import annotations

import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fabric.errors import ConfigError
from fabric.secure.errors import (
    ForeignFrameError,
    MalformedFrameError,
    SecureUsageError,
    SequenceExhaustedError,
    TamperedFrameError,
)
from fabric.secure.frame import (
    AAD_BYTES_MAX,
    CHANNEL_ID_BYTES,
    FRAMES_PER_KEY,
    HEADER,
    HEADER_BYTES,
    OVERHEAD_BYTES,
    PLAINTEXT_BYTES_MAX,
    REPLAY_WINDOW_FRAMES_DEFAULT,
    REPLAY_WINDOW_FRAMES_MAX,
    SEQ_MAX,
    VERSION,
    Direction,
    nonce,
    sealed_bytes,
)
from fabric.secure.keys import ROLES, Role, SessionKeys, epoch_key, nonce_salt
from fabric.secure.memory_only import MemoryOnly
from fabric.secure.replay import ReplayWindow

Buffer = bytes | bytearray | memoryview
# Receive keys kept at once: the window spans at most two key epochs (see frame).
RECEIVE_KEYS_MAX = 2


def _bytes_view(data: object, what: str, error: type[Exception] = SecureUsageError) -> memoryview:
    """A flat byte view of any contiguous buffer; `error` for anything else (peer input gets a typed one)."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise error(f"{what} must be a bytes-like buffer, got {type(data).__name__}") from None
    if not view.c_contiguous:
        raise error(f"{what} must be a contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class SecureChannel(MemoryOnly):
    """One side of an authenticated, encrypted channel built from one handshake's SessionKeys."""

    __slots__ = ("_channel_id", "_frames_opened", "_lock", "_plaintext_bytes_max", "_recv_dir", "_recv_keys",
                 "_recv_salt", "_recv_traffic", "_role", "_send_dir", "_send_epoch", "_send_key",
                 "_send_salt", "_send_seq", "_send_traffic", "_window")

    def __init__(self, keys: SessionKeys, *, role: Role,
                 replay_window_frames: int = REPLAY_WINDOW_FRAMES_DEFAULT,
                 plaintext_bytes_max: int = PLAINTEXT_BYTES_MAX) -> None:
        if role not in ROLES:
            raise SecureUsageError(f"role must be one of {ROLES}, got {role!r}")
        if not isinstance(keys, SessionKeys) or keys.role != role:
            raise SecureUsageError(f"the keys are not a {role}'s SessionKeys: the two ends would "
                                   f"seal under each other's keys")
        if not 1 <= replay_window_frames <= REPLAY_WINDOW_FRAMES_MAX:
            raise ConfigError(f"replay_window_frames={replay_window_frames}: use 1.."
                              f"{REPLAY_WINDOW_FRAMES_MAX}, and at least the frames the sender keeps "
                              f"in flight")
        if not 0 <= plaintext_bytes_max <= PLAINTEXT_BYTES_MAX:
            raise ConfigError(f"plaintext_bytes_max={plaintext_bytes_max}: use 0..{PLAINTEXT_BYTES_MAX}")
        traffic = keys.take_traffic_secrets()
        self._role = role
        self._channel_id = keys.channel_id
        assert len(self._channel_id) == CHANNEL_ID_BYTES
        i2r, r2i = Direction.INITIATOR_TO_RESPONDER, Direction.RESPONDER_TO_INITIATOR
        self._send_dir, self._recv_dir = (i2r, r2i) if role == "initiator" else (r2i, i2r)
        self._send_traffic, self._recv_traffic = traffic[self._send_dir], traffic[self._recv_dir]
        self._send_salt = nonce_salt(self._send_traffic)
        self._recv_salt = nonce_salt(self._recv_traffic)
        self._send_seq = 0
        self._send_epoch = -1
        self._send_key: AESGCM | None = None
        self._recv_keys: dict[int, AESGCM] = {}
        self._window = ReplayWindow(replay_window_frames)
        self._plaintext_bytes_max = plaintext_bytes_max
        self._frames_opened = 0
        self._lock = threading.Lock()

    @property
    def role(self) -> Role:
        """Which end of the handshake this is."""
        return self._role

    @property
    def channel_id(self) -> bytes:
        """The 16-byte id in every frame header of this channel."""
        return self._channel_id

    @property
    def frames_sealed(self) -> int:
        """Sequence numbers used so far (the next frame gets this one)."""
        return self._send_seq

    @property
    def frames_opened(self) -> int:
        """Frames from the peer that authenticated."""
        return self._frames_opened

    def seal(self, plaintext: Buffer, aad: Buffer) -> bytearray:
        """A new frame carrying `plaintext`, bound to `aad`; assigns the next sequence number."""
        n = memoryview(plaintext).nbytes
        # Refuse before allocating: seal_into checks again, this only spares a huge allocation.
        if n > self._plaintext_bytes_max:
            raise SecureUsageError(f"plaintext of {n} bytes is over the {self._plaintext_bytes_max}-byte "
                                   f"frame limit: send smaller batches")
        out = bytearray(sealed_bytes(n))
        self.seal_into(plaintext, aad, out)
        return out

    def seal_into(self, plaintext: Buffer, aad: Buffer, out: bytearray | memoryview) -> int:
        """Seal into the first sealed_bytes(len(plaintext)) bytes of `out`; returns that size."""
        view = _bytes_view(plaintext, "plaintext")
        n = view.nbytes
        if n > self._plaintext_bytes_max:
            raise SecureUsageError(f"plaintext of {n} bytes is over the {self._plaintext_bytes_max}-byte "
                                   f"frame limit: send smaller batches")
        aad_view = _bytes_view(aad, "aad")
        if aad_view.nbytes > AAD_BYTES_MAX:
            raise SecureUsageError(f"aad of {aad_view.nbytes} bytes is over {AAD_BYTES_MAX}")
        target = _bytes_view(out, "out")
        size = sealed_bytes(n)
        if target.readonly or target.nbytes < size:
            raise SecureUsageError(f"out must be a writable buffer of at least {size} bytes")
        with self._lock:
            seq = self._send_seq
            if seq > SEQ_MAX:
                raise SequenceExhaustedError(f"all {SEQ_MAX + 1} sequence numbers are used: "
                                             f"run a new handshake")
            # Burn the number before encrypting: if anything below fails, it is never used again.
            self._send_seq = seq + 1
            key = self._sending_key(seq // FRAMES_PER_KEY)
        HEADER.pack_into(target, 0, VERSION, self._send_dir, self._channel_id, seq)
        header = bytes(target[:HEADER_BYTES])
        # encrypt_into writes ciphertext and tag straight behind the header: no copy of the payload.
        key.encrypt_into(nonce(self._send_salt, seq), view, header + aad_view, target[HEADER_BYTES:size])
        return size

    def open(self, frame: Buffer, aad: Buffer) -> bytes:
        """The plaintext of an authenticated, fresh frame from the peer; a FrameRejectedError otherwise."""
        view = _bytes_view(frame, "frame", MalformedFrameError)
        if view.nbytes < OVERHEAD_BYTES:
            raise MalformedFrameError(f"frame of {view.nbytes} bytes is shorter than the "
                                      f"{OVERHEAD_BYTES}-byte header and tag")
        if view.nbytes - OVERHEAD_BYTES > self._plaintext_bytes_max:
            raise MalformedFrameError(f"frame of {view.nbytes} bytes is over the "
                                      f"{self._plaintext_bytes_max}-byte plaintext limit")
        aad_view = _bytes_view(aad, "aad", MalformedFrameError)
        if aad_view.nbytes > AAD_BYTES_MAX:
            raise MalformedFrameError(f"aad of {aad_view.nbytes} bytes is over {AAD_BYTES_MAX}")
        version, direction, channel_id, seq = HEADER.unpack_from(view)
        if version != VERSION:
            raise MalformedFrameError(f"frame version {version}, expected {VERSION}")
        if direction not in (Direction.INITIATOR_TO_RESPONDER, Direction.RESPONDER_TO_INITIATOR):
            raise MalformedFrameError(f"frame direction {direction} is neither 0 nor 1")
        if channel_id != self._channel_id:
            raise ForeignFrameError(f"frame of channel {channel_id.hex()}, this is {self._channel_id.hex()}")
        if direction == self._send_dir:
            raise ForeignFrameError(f"frame travels {Direction(direction).name}: one of ours, reflected")
        with self._lock:
            self._window.check(seq)
            key = self._receiving_key(seq // FRAMES_PER_KEY)
        header = bytes(view[:HEADER_BYTES])
        try:
            plaintext = key.decrypt(nonce(self._recv_salt, seq), view[HEADER_BYTES:], header + aad_view)
        except InvalidTag:
            raise TamperedFrameError(f"frame {seq} does not authenticate: header, ciphertext, tag "
                                     f"or aad changed") from None
        with self._lock:
            self._window.check(seq)  # again: another thread may have accepted it meanwhile
            self._window.accept(seq)
            self._frames_opened += 1
        return plaintext

    def _sending_key(self, epoch: int) -> AESGCM:
        if epoch != self._send_epoch:
            self._send_key = AESGCM(epoch_key(self._send_traffic, epoch))
            self._send_epoch = epoch
        assert self._send_key is not None
        return self._send_key

    def _receiving_key(self, epoch: int) -> AESGCM:
        key = self._recv_keys.get(epoch)
        if key is None:
            if len(self._recv_keys) >= RECEIVE_KEYS_MAX:
                del self._recv_keys[max(self._recv_keys, key=lambda e: abs(e - epoch))]
            key = self._recv_keys[epoch] = AESGCM(epoch_key(self._recv_traffic, epoch))
        return key

    def __repr__(self) -> str:
        return (f"SecureChannel(role={self._role}, channel_id={self._channel_id.hex()}, "
                f"sealed={self._send_seq}, opened={self._frames_opened})")
