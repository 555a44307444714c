"""Loaders for real workload traces (guest-memory captures; VM traces come later)."""

from fabric.traces.guest_capture import CaptureMeta, GuestCapture
from fabric.traces.paths import default_data_root, default_guest_captures

__all__ = ["CaptureMeta", "GuestCapture", "default_data_root", "default_guest_captures"]
