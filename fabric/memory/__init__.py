"""Guest memory: pages, dirty tracking, digests, workloads and the VM that runs them."""

from fabric.memory.content import ContentMix
from fabric.memory.hashing import memory_digest, page_hashes
from fabric.memory.layout import MIB, PAGE_SIZE, pages_for_mib
from fabric.memory.pagestore import PageStore
from fabric.memory.vm import DeviceState, RunState, Vm
from fabric.memory.workloads import (
    ReplaySpec,
    ReplayWorkload,
    SyntheticSpec,
    SyntheticWorkload,
    Workload,
    WorkloadSpec,
    make_workload,
    spec_from_dict,
    spec_to_dict,
)

__all__ = [
    "MIB", "PAGE_SIZE", "ContentMix", "DeviceState", "PageStore", "ReplaySpec", "ReplayWorkload",
    "RunState", "SyntheticSpec", "SyntheticWorkload", "Vm", "Workload", "WorkloadSpec",
    "make_workload", "memory_digest", "page_hashes", "pages_for_mib", "spec_from_dict",
    "spec_to_dict",
]
