"""Load the optimized BLAS before anything imports mlx (see medlora.blas)."""

from medlora.blas import load_fast_blas

load_fast_blas()
