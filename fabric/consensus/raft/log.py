"""Raft's in-memory log: entries after the last snapshot, indexed from 1."""

from __future__ import annotations

from fabric.consensus.raft.messages import Entry


class RaftLog:
    """Entries snapshot_index+1 .. last_index; the snapshot stands for everything before."""

    __slots__ = ("_entries", "snapshot_index", "snapshot_term")

    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0,
                 entries: tuple[Entry, ...] = ()) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = []
        for e in entries:
            self.append(e)

    @property
    def last_index(self) -> int:
        """Index of the last entry (the snapshot's if there is none)."""
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        """Term of the last entry (the snapshot's if there is none)."""
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or not there yet."""
        if index == self.snapshot_index:
            return self.snapshot_term
        pos = index - self.snapshot_index - 1
        if 0 <= pos < len(self._entries):
            return self._entries[pos].term
        return None

    def entry(self, index: int) -> Entry:
        """The entry at `index`, which must be in the log."""
        e = self._entries[index - self.snapshot_index - 1]
        assert e.index == index
        return e

    def entries_from(self, index: int, count_max: int) -> tuple[Entry, ...]:
        """Up to `count_max` entries from `index` (which must not be compacted)."""
        assert index > self.snapshot_index, (index, self.snapshot_index)
        pos = index - self.snapshot_index - 1
        return tuple(self._entries[pos:pos + count_max])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at last_index/last_term at least as up to date as this one (Raft 5.4.1)?"""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def append(self, entry: Entry) -> None:
        """Add the next entry."""
        assert entry.index == self.last_index + 1 and entry.term >= self.last_term, (entry, self.last_index)
        self._entries.append(entry)

    def merge(self, entries: tuple[Entry, ...], commit: int) -> int | None:
        """Add a leader's entries that follow a matching prev; drop ours that conflict.

        Returns the first index written (None if nothing changed). Committed
        entries never conflict: that would be a broken Raft, so it asserts.
        """
        for k, e in enumerate(entries):
            have = self.term_at(e.index)
            if have == e.term:
                continue
            if e.index <= self.snapshot_index:
                continue  # compacted, hence committed, hence equal
            if have is not None:
                assert e.index > commit, f"conflict at committed index {e.index} (commit {commit})"
                del self._entries[e.index - self.snapshot_index - 1:]
            for rest in entries[k:]:
                self.append(rest)
            return e.index
        return None

    def first_index_of_term_from(self, index: int, floor: int) -> int:
        """The first index at or below `index` (but above `floor`) whose term equals index's term."""
        term = self.term_at(index)
        while index - 1 > floor and self.term_at(index - 1) == term:
            index -= 1
        return index

    def compact(self, index: int, term: int) -> None:
        """Forget entries up to `index` (now covered by a snapshot)."""
        assert self.snapshot_index <= index <= self.last_index and self.term_at(index) == term
        del self._entries[:index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term

    def reset(self, index: int, term: int) -> None:
        """Forget every entry: a snapshot at index/term replaces the log."""
        self._entries.clear()
        self.snapshot_index, self.snapshot_term = index, term

    def entries(self) -> tuple[Entry, ...]:
        """Every entry still held."""
        return tuple(self._entries)
