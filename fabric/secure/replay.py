"""The receiver's sliding replay window (a bitmap, as IPsec's RFC 4303 3.4.3 and DTLS).

Frames may arrive out of order. A sequence number is acceptable once, and only
within `size` of the highest accepted one, behind or ahead: the sender keeps
fewer frames than that in flight, so anything farther is stale or forged.
`check` runs before the frame is authenticated, `accept` only after, so a
forged frame never moves the window.
"""

from __future__ import annotations

from fabric.secure.errors import OutOfWindowError, ReplayedFrameError
from fabric.secure.frame import REPLAY_WINDOW_FRAMES_MAX, SEQ_MAX


class ReplayWindow:
    """Which of the last `size` sequence numbers were accepted."""

    __slots__ = ("_bitmap", "_highest", "_mask", "size")

    def __init__(self, size: int) -> None:
        assert 1 <= size <= REPLAY_WINDOW_FRAMES_MAX, size
        self.size = size
        self._highest = -1  # nothing accepted yet: 0..size-1 are acceptable
        self._bitmap = 0  # bit i set: highest - i was accepted
        self._mask = (1 << size) - 1

    @property
    def highest(self) -> int:
        """The highest accepted sequence number, -1 before the first."""
        return self._highest

    def check(self, seq: int) -> None:
        """Raise if `seq` may not be accepted now; changes nothing."""
        assert 0 <= seq <= SEQ_MAX
        if seq > self._highest:
            if seq - self._highest > self.size:
                raise OutOfWindowError(f"frame {seq} is too far ahead: the highest accepted is "
                                       f"{self._highest}, the window {self.size} frames")
            return
        offset = self._highest - seq
        if offset >= self.size:
            raise OutOfWindowError(f"frame {seq} is too old: the highest accepted is {self._highest}, "
                                   f"the window {self.size} frames")
        if (self._bitmap >> offset) & 1:
            raise ReplayedFrameError(f"frame {seq} was already accepted")

    def accept(self, seq: int) -> None:
        """Record `seq` as accepted; only for an authenticated frame that passed `check`."""
        if seq > self._highest:
            shift = seq - self._highest
            self._bitmap = ((self._bitmap << shift) | 1) & self._mask
            self._highest = seq
        else:
            offset = self._highest - seq
            assert offset < self.size and not (self._bitmap >> offset) & 1
            self._bitmap |= 1 << offset
