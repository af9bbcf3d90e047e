"""Whole-directory writes that are never seen half-done.

Snapshots and model directories are written under a temporary name beside their
target and swapped in with :func:`replace_dir`, so a crash or a rejected input
leaves either the old directory or the new one, never a mix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def replace_dir(staging: Path, out: Path) -> None:
    """Move ``staging`` to ``out``; an existing ``out`` is moved aside first, then deleted."""
    if out.is_symlink() or out.is_file():
        out.unlink()
    if not out.exists():
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
