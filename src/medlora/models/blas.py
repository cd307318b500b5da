"""Load an optimized BLAS before mlx is imported.

The Linux ``mlx[cpu]`` wheel links a reference BLAS (~6 GFLOP/s for a 1024x1024
matmul on a 2-core machine). Loading OpenBLAS into the global symbol namespace
*before* ``import mlx`` makes mlx resolve ``sgemm`` & co. to it (~190 GFLOP/s,
about 10x more LoRA training tokens/s). This module must not import mlx.

``import medlora`` calls :func:`load_fast_blas` (idempotent), so every entry point, the CLI or a
script using the Python API, gets the same BLAS. A process that imported mlx before medlora
cannot: importing medlora then raises ImportError rather than silently running ~30x slower.
``MEDLORA_BLAS`` picks a library file (or ``none`` to keep the reference BLAS).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

# Debian/Ubuntu: `apt-get install libopenblas0-pthread`; the generic names cover other distros.
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "libopenblas.so.0",
    "libopenblas.so",
)

_loaded: str | None = None


def load_fast_blas() -> str:
    """Load OpenBLAS globally if possible; return a label of the BLAS mlx will use."""
    global _loaded
    if _loaded is not None:
        return _loaded
    if sys.platform == "darwin":
        _loaded = "accelerate"  # mlx on macOS uses Accelerate / Metal already
        return _loaded
    choice = os.environ.get("MEDLORA_BLAS", "auto")
    if choice == "none":
        _loaded = "reference"
        return _loaded
    mlx_first = "mlx.core" in sys.modules
    for path in (choice,) if choice != "auto" else CANDIDATES:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        if mlx_first:  # mlx already resolved its BLAS symbols to the slow reference library
            raise ImportError(
                "mlx was imported before medlora, so it keeps the reference BLAS (~30x slower on CPU) "
                "(fix: import medlora before mlx or mlx_lm, or set MEDLORA_BLAS=none to accept the slow BLAS)"
            )
        _loaded = f"openblas:{path}"
        return _loaded
    _loaded = "reference"
    print(
        "medlora: warning: no optimized BLAS found; CPU training runs ~10x slower "
        "(fix: apt-get install libopenblas0-pthread, or set MEDLORA_BLAS=/path/to/libopenblas.so)",
        file=sys.stderr,
    )
    return _loaded


def blas_in_use() -> str:
    """The label from :func:`load_fast_blas` (loading first if nobody has)."""
    return load_fast_blas()


def _openblas():
    if not _loaded or not _loaded.startswith("openblas:"):
        return None
    lib = ctypes.CDLL(_loaded.split(":", 1)[1], mode=ctypes.RTLD_GLOBAL)
    return lib if hasattr(lib, "openblas_set_num_threads") else None


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Within the block, OpenBLAS uses ``n`` threads (no-op for other BLAS libraries).

    Two MLX CPU streams each running a 2-thread matmul on 2 cores oversubscribe them:
    measured ~25% slower per training step than 1 thread each.
    """
    lib = _openblas()
    if lib is None:
        yield
        return
    before = lib.openblas_get_num_threads()
    lib.openblas_set_num_threads(max(1, n))
    try:
        yield
    finally:
        lib.openblas_set_num_threads(before)
