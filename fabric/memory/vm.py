"""A VM: a PageStore, a workload and a run state, advanced by guest time."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fabric.errors import VmStateError
from fabric.memory.layout import PAGE_SIZE
from fabric.memory.pagestore import PageStore
from fabric.memory.workloads import (
    Workload,
    WorkloadSpec,
    make_workload,
    spec_from_dict,
    spec_to_dict,
)

# One advance never runs more guest time than this: a node that stalls for a
# minute must not replay a minute of writes in one burst when it wakes.
ADVANCE_S_MAX = 1.0
THROTTLE_PCT_MAX = 99  # QEMU's cpu-throttle-percentage maximum


class RunState(StrEnum):
    """Where a VM is in its life."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True, kw_only=True)
class DeviceState:
    """What travels with the last pages at switchover: the guest clock and the workload."""

    guest_time_s: float
    workload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"guest_time_s": self.guest_time_s, "workload": self.workload}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeviceState:
        """Parse and check the JSON-ready form."""
        spec_from_dict(raw["workload"])  # raises ConfigError if it is not a workload
        return cls(guest_time_s=float(raw["guest_time_s"]), workload=dict(raw["workload"]))


class Vm:
    """One guest. `advance(now)` runs its workload for the wall time since the last call."""

    def __init__(self, name: str, memory: PageStore, workload: Workload, *,
                 guest_time_s: float = 0.0) -> None:
        if memory.pages != workload.pages:
            raise ValueError(f"memory of {memory.pages} pages, workload expects {workload.pages}")
        self.name = name
        self.memory = memory
        self.workload = workload
        self._guest_time_s = guest_time_s
        self._state = RunState.PAUSED
        self._last_now: float | None = None
        self._writes = 0
        # Auto-converge's CPU throttle: the share of wall time the guest does NOT run
        # (QEMU's cpu-throttle-percentage), so it dirties memory proportionally slower.
        self._throttle_pct = 0
        self._lock = threading.Lock()  # serialises advance with pause/resume

    @classmethod
    def boot(cls, name: str, spec: WorkloadSpec) -> Vm:
        """A new, paused VM with its workload's boot content."""
        workload = make_workload(spec)
        memory = PageStore(workload.pages)
        workload.boot(memory)
        memory.take_dirty()  # boot content is the starting point, not guest activity
        return cls(name, memory, workload)

    @classmethod
    def restore(cls, name: str, memory: PageStore, device: DeviceState) -> Vm:
        """A paused VM rebuilt at a migration's destination from its memory and device state."""
        return cls(name, memory, make_workload(spec_from_dict(device.workload)),
                   guest_time_s=device.guest_time_s)

    @property
    def state(self) -> RunState:
        """Current run state."""
        return self._state

    @property
    def guest_time_s(self) -> float:
        """Seconds of guest time run so far."""
        return self._guest_time_s

    @property
    def throttle_pct(self) -> int:
        """Share of wall time the guest is held back, in percent (0: unthrottled)."""
        return self._throttle_pct

    def set_throttle(self, pct: int) -> None:
        """Hold the guest back for `pct` percent of wall time (0..99), like QEMU's cpu throttle."""
        if not 0 <= pct <= THROTTLE_PCT_MAX:
            raise ValueError(f"throttle must be 0..{THROTTLE_PCT_MAX} %, not {pct}")
        with self._lock:
            self._throttle_pct = pct

    @property
    def page_writes(self) -> int:
        """Page writes the workload made on this node."""
        return self._writes

    def resume(self, now: float) -> None:
        """Start or continue running from wall time `now`."""
        with self._lock:
            if self._state is RunState.STOPPED:
                raise VmStateError(f"VM {self.name} is stopped")
            self._state = RunState.RUNNING
            self._last_now = now

    def advance(self, now: float) -> int:
        """Run the workload for the wall time since the last call; return page writes."""
        with self._lock:
            return self._advance_locked(now)

    def _advance_locked(self, now: float) -> int:
        if self._state is not RunState.RUNNING or self._last_now is None:
            return 0
        dt = min(max(0.0, now - self._last_now), ADVANCE_S_MAX) * (100 - self._throttle_pct) / 100
        self._last_now = now
        if dt == 0.0:
            return 0
        t0 = self._guest_time_s
        self._guest_time_s = t0 + dt
        n = self.workload.run(self.memory, t0, self._guest_time_s)
        self._writes += n
        return n

    def rebase(self, now: float) -> None:
        """Skip wall time up to `now` without running it: the guest was stalled (a page fault),
        and a stalled guest does not make up for it in one burst afterwards."""
        with self._lock:
            if self._state is RunState.RUNNING:
                self._last_now = now

    def pause(self, now: float, *, run_due: bool = True) -> DeviceState:
        """Stop the guest at `now` (after the writes due by then); no write happens after this returns.

        `run_due=False` stops it where it is: for a guest whose last writes failed
        (a post-copy page that never came), which must not be run again to stop it.
        """
        with self._lock:
            if run_due:
                self._advance_locked(now)
            if self._state is RunState.STOPPED:
                raise VmStateError(f"VM {self.name} is stopped")
            self._state = RunState.PAUSED
            self._last_now = None
            return self.device_state()

    def stop(self) -> None:
        """Stop for good (the VM was handed over or deleted)."""
        with self._lock:
            self._state = RunState.STOPPED
            self._last_now = None

    def device_state(self) -> DeviceState:
        """The guest clock and workload spec."""
        return DeviceState(guest_time_s=self._guest_time_s,
                           workload=spec_to_dict(self.workload.spec))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"name": self.name, "state": self._state.value,
                "memory_mib": self.memory.pages * PAGE_SIZE / (1 << 20),
                "guest_time_s": self._guest_time_s, "page_writes": self._writes,
                "workload": self.workload.describe()}
