"""What a benchmark ran on, for its JSON: one line every script in ``scripts/`` records.

The machine alone does not explain a figure that moved between two days: ``scripts/install.sh``
installs the newest release each dependency allows, so the libraries under a request can change
too. The line names both, and the load average when the run began (other work on the cores).
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
