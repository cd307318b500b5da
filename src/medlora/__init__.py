"""medlora: fine-tune small language models to answer medical questions.

The flow, one subpackage per stage (each imports only the ones listed before it):

    config    compose the Hydra configs (workspace, then packaged) into typed values
    data      CSV -> cleaned, grouped train/valid/test splits -> token cache
    models    BLAS, GGUF import, model loading, generation, sentence embeddings
    tracking  the MLflow store and its runs
    training  one LoRA run on mlx-lm's trainer: loss, callbacks, memory model
    study     the Optuna study: search space, memory cap, pruning, report
    registry  promote / roll back the champion adapter, model card, loading it
    answers   ask, retrieval, safety triage, evaluation
    cli       the `medlora` command

Importing medlora loads the optimized BLAS before anything imports mlx (see
:mod:`medlora.models.blas`), so a script using the Python API trains and answers as
fast as the command line.
"""

from medlora.models.blas import load_fast_blas

__version__ = "0.2.0"

load_fast_blas()
