"""Where a Raft replica's durable state lives: term, vote, log and snapshot.

The replica never touches storage itself. Each Ready may carry a `RaftPersist`;
the shell calls `storage.save(persist)` and, only once it returns, sends the
Ready's messages. On restart the shell calls `storage.load()` and builds the
replica from it. `save` applies a persist in this order:

    1. drop stored entries with index >= truncate_from   (a follower's conflicting tail)
    2. append `entries`                                   (contiguous with what is left)
    3. store `snapshot`, drop entries at or below its index
    4. store `hard_state`

`MemoryRaftStorage` is for the simulator: a crash loses the replica's volatile
state but keeps what was saved. `FileRaftStorage` fsyncs every save.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fabric.consensus.api import Request
from fabric.consensus.errors import ConsensusStorageError, MalformedMessageError
from fabric.consensus.raft.messages import Entry, Snapshot


@dataclass(frozen=True, kw_only=True, slots=True)
class HardState:
    """What a replica must never forget: its term and whom it voted for in it."""

    term: int = 0
    vote: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RaftPersist:
    """One Ready's changes to durable state (applied in the module doc's order)."""

    hard_state: HardState | None = None
    truncate_from: int | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None

    def brief(self) -> str:
        """Short text form for scripts."""
        parts = []
        if self.hard_state is not None:
            parts.append(f"term={self.hard_state.term} vote={self.hard_state.vote}")
        if self.entries:
            parts.append(f"entries {self.entries[0].index}..{self.entries[-1].index}")
        if self.snapshot is not None:
            parts.append(f"snapshot@{self.snapshot.index}")
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True, kw_only=True, slots=True)
class RaftDurable:
    """Everything `load` returns."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]


class RaftStorage(Protocol):
    """Durable state of one replica."""

    def load(self) -> RaftDurable:
        """What was saved, in order."""
        ...

    def save(self, persist: RaftPersist) -> None:
        """Apply `persist`; durable on return."""
        ...


def _apply_entries(entries: list[Entry], snapshot: Snapshot | None, persist: RaftPersist) -> list[Entry]:
    kept = entries
    if persist.truncate_from is not None:
        kept = [e for e in kept if e.index < persist.truncate_from]
    if persist.entries:
        base = kept[-1].index if kept else (snapshot.index if snapshot else 0)
        first = persist.entries[0].index
        assert first == base + 1, f"entries from {first} do not follow stored {base}"
        kept = kept + list(persist.entries)
    if persist.snapshot is not None:
        kept = [e for e in kept if e.index > persist.snapshot.index]
    return kept


class MemoryRaftStorage:
    """Durable state kept in memory: survives a simulated crash, not the process."""

    def __init__(self) -> None:
        self._hard = HardState()
        self._snapshot: Snapshot | None = None
        self._entries: list[Entry] = []
        self.saves = 0

    def load(self) -> RaftDurable:
        """What was saved."""
        return RaftDurable(hard_state=self._hard, snapshot=self._snapshot, entries=tuple(self._entries))

    def save(self, persist: RaftPersist) -> None:
        """Apply `persist` (values are immutable, so keeping them is a copy)."""
        self._entries = _apply_entries(self._entries, self._snapshot, persist)
        if persist.snapshot is not None:
            self._snapshot = persist.snapshot
        if persist.hard_state is not None:
            self._hard = persist.hard_state
        self.saves += 1


OpToDict = Callable[[Any], dict[str, Any]]
OpFromDict = Callable[[dict[str, Any]], Any]


class FileRaftStorage:
    """Durable state in a directory; every save is fsync'd before it returns.

    hardstate.json and snapshot.json are replaced atomically (write, fsync,
    rename, fsync the directory). log.jsonl holds one entry per line with a
    CRC-32; a torn last line (a crash mid-append) is dropped on load, any other
    bad line is corruption and refused.
    """

    def __init__(self, directory: str | Path, *, op_to_dict: OpToDict, op_from_dict: OpFromDict) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._op_to_dict = op_to_dict
        self._op_from_dict = op_from_dict
        self._hard = HardState()
        self._snapshot: Snapshot | None = None
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # byte offset of each entry's line in log.jsonl
        self._recover()

    @property
    def _log_path(self) -> Path:
        return self._dir / "log.jsonl"

    # -- encoding ------------------------------------------------------------

    def _entry_line(self, e: Entry) -> bytes:
        req = None
        if e.request is not None:
            r = e.request
            req = {"c": r.client_id, "r": r.request_id, "ro": r.read_only, "op": self._op_to_dict(r.op),
                   "sig": r.signature.hex()}
        body = json.dumps({"i": e.index, "t": e.term, "req": req,
                           "voters": list(e.voters) if e.voters is not None else None}, sort_keys=True)
        return (json.dumps({"crc": zlib.crc32(body.encode()), "e": body}) + "\n").encode()

    def _entry_from_line(self, line: bytes) -> Entry:
        outer = json.loads(line)
        body = outer["e"]
        if zlib.crc32(body.encode()) != outer["crc"]:
            raise ValueError("crc mismatch")
        raw = json.loads(body)
        req = raw["req"]
        request = None
        if req is not None:
            request = Request(client_id=req["c"], request_id=req["r"], read_only=req["ro"],
                              op=self._op_from_dict(req["op"]), signature=bytes.fromhex(req["sig"]))
        voters = tuple(raw["voters"]) if raw["voters"] is not None else None
        return Entry(term=raw["t"], index=raw["i"], request=request, voters=voters)

    # -- files ---------------------------------------------------------------

    def _write_atomic(self, name: str, obj: Any) -> None:
        tmp = self._dir / (name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._dir / name)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite_log(self) -> None:
        tmp = self._dir / "log.jsonl.tmp"
        self._offsets = []
        with open(tmp, "wb") as f:
            for e in self._entries:
                self._offsets.append(f.tell())
                f.write(self._entry_line(e))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._log_path)
        self._fsync_dir()

    def _recover(self) -> None:
        try:
            hs = self._dir / "hardstate.json"
            if hs.exists():
                raw = json.loads(hs.read_text())
                self._hard = HardState(term=int(raw["term"]), vote=raw["vote"])
            sp = self._dir / "snapshot.json"
            if sp.exists():
                raw = json.loads(sp.read_text())
                self._snapshot = Snapshot(index=raw["index"], term=raw["term"], voters=tuple(raw["voters"]),
                                          data=raw["data"])
        except (ValueError, KeyError, TypeError, MalformedMessageError) as e:
            raise ConsensusStorageError(f"{self._dir}: unreadable hard state or snapshot ({e})") from e
        if not self._log_path.exists():
            return
        data = self._log_path.read_bytes()
        lines = data.split(b"\n")
        pos, good_end, torn = 0, 0, False
        base = self._snapshot.index if self._snapshot else 0
        for n, line in enumerate(lines):
            end = pos + len(line) + 1
            if not line:
                pos = end
                continue
            last = n == len(lines) - 1 or (n == len(lines) - 2 and not lines[-1])
            try:
                e = self._entry_from_line(line)
                if not data[pos:end].endswith(b"\n"):
                    raise ValueError("no newline")
            except (ValueError, KeyError, TypeError, MalformedMessageError) as err:
                if last:
                    torn = True  # a crash tore the last append; it was never acknowledged
                    break
                raise ConsensusStorageError(f"{self._log_path}: line {n + 1} unreadable ({err})") from err
            if e.index > base:
                expect = self._entries[-1].index + 1 if self._entries else base + 1
                if e.index != expect:
                    raise ConsensusStorageError(f"{self._log_path}: entry {e.index} follows {expect - 1}")
                self._entries.append(e)
            good_end = end
            pos = end
        if torn or good_end != len(data):
            with open(self._log_path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        # Entries at or below the snapshot are gone for good; rewrite so offsets match.
        self._rewrite_log()

    # -- the interface ---------------------------------------------------------

    def load(self) -> RaftDurable:
        """What was saved."""
        return RaftDurable(hard_state=self._hard, snapshot=self._snapshot, entries=tuple(self._entries))

    def save(self, persist: RaftPersist) -> None:
        """Apply `persist` durably: log first, then snapshot, then hard state."""
        if persist.truncate_from is not None or persist.entries:
            cut_only = RaftPersist(truncate_from=persist.truncate_from)
            kept = _apply_entries(self._entries, self._snapshot, cut_only)
            keep = len(kept)
            with open(self._log_path, "r+b" if self._log_path.exists() else "w+b") as f:
                cut = self._offsets[keep] if keep < len(self._offsets) else f.seek(0, os.SEEK_END)
                f.truncate(cut)
                f.seek(cut)
                del self._offsets[keep:]
                for e in persist.entries:
                    self._offsets.append(f.tell())
                    f.write(self._entry_line(e))
                f.flush()
                os.fsync(f.fileno())
            self._entries = _apply_entries(kept, self._snapshot, RaftPersist(entries=persist.entries))
        if persist.snapshot is not None:
            s = persist.snapshot
            self._write_atomic("snapshot.json", {"index": s.index, "term": s.term, "voters": list(s.voters),
                                                 "data": s.data})
            self._snapshot = s
            self._entries = [e for e in self._entries if e.index > s.index]
            self._rewrite_log()
        if persist.hard_state is not None:
            self._write_atomic("hardstate.json", {"term": persist.hard_state.term,
                                                  "vote": persist.hard_state.vote})
            self._hard = persist.hard_state
