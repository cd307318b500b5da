"""Models: the optimized BLAS, GGUF import, loading (embedded, tiny random, hub), generation, embeddings.

This ``__init__`` imports nothing: :mod:`medlora.models.blas` must be importable before mlx.
"""
