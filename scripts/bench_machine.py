"""What a benchmark ran on, for its JSON: one line every script in ``scripts/`` records.

The machine alone does not explain a figure that moved between two days: ``scripts/install.sh``
installs the newest release each dependency allows, so the libraries under a request can change
too. The line names both, and the load average when the run began (other work on the cores).

On a virtual machine the host can also take the cores away: :class:`StealMeter` measures the
share of CPU time the hypervisor took ("steal" in ``/proc/stat``) over a stretch of a run, so a
latency figure can be read beside how contended the host was while it was measured.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("torch", "torch-geometric", "neo4j", "numpy", "polars", "scipy", "fastapi", "uvicorn")


def describe_machine() -> str:
    """``"host x86_64, 2 cores, 23 GiB, load 0.41; python 3.11.2, torch 2.15.0, …"``."""
    parts = [f"{platform.node()} {platform.machine()}", f"{os.cpu_count()} cores"]
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        parts.append(f"{memory / 2**30:.0f} GiB")
    except (ValueError, OSError, AttributeError):  # not every platform names these
        pass
    if hasattr(os, "getloadavg"):
        parts.append(f"load {os.getloadavg()[0]:.2f}")
    libraries = [f"python {platform.python_version()}"]
    for name in LIBRARIES:
        try:
            libraries.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts) + "; " + ", ".join(libraries)


class StealMeter:
    """The share of CPU time stolen by the hypervisor since the meter was made (Linux; None elsewhere)."""

    def __init__(self) -> None:
        self.start = _cpu_times()

    def share(self) -> float | None:
        """Stolen / all CPU time since the start, e.g. 0.12 for 12%; None without ``/proc/stat``."""
        end = _cpu_times()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        return round((end[1] - self.start[1]) / (end[0] - self.start[0]), 3)


def _cpu_times() -> tuple[int, int] | None:
    """``(all, steal)`` CPU ticks so far, summed over the cores, from the ``cpu`` line of ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user and nice]
    return sum(fields[:8]), (fields[7] if len(fields) > 7 else 0)
