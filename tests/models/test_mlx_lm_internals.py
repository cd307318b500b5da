"""The mlx-lm internals medlora relies on are where it expects them.

``pyproject.toml`` bounds mlx-lm to the releases checked here. When a new release moves one of
these, this test names what moved, instead of a training run failing (or silently running
without the fast kernels) somewhere deep inside.
"""

from __future__ import annotations

import importlib

import pytest

from medlora.models.fastmath import fast_kernels

USED = {
    "mlx_lm.tuner.trainer": ["train", "evaluate", "iterate_batches", "default_loss", "TrainingArgs"],
    "mlx_lm.tuner.callbacks": ["TrainingCallback"],
    "mlx_lm.tuner.utils": ["linear_to_lora_layers", "load_adapters"],
    "mlx_lm.generate": ["stream_generate", "batch_generate", "BatchGenerator"],
    "mlx_lm.sample_utils": ["make_sampler", "make_logits_processors"],
    "mlx_lm.utils": ["load", "save", "load_config", "get_total_parameters"],
    "mlx_lm.gguf": ["permute_weights", "translate_weight_names"],  # medlora export's GGUF tensors
}


def test_the_batch_generator_has_the_calls_medlora_serve_makes():
    """medlora.answers.batching drives BatchGenerator: insert (with samplers), next_generated, remove, close."""
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.tuner.lora import LoRALinear

    missing = [name for name in ("insert", "next_generated", "remove", "close") if not hasattr(BatchGenerator, name)]
    assert not missing and "samplers" in BatchGenerator.insert.__code__.co_varnames, missing
    assert hasattr(LoRALinear, "fuse")  # medlora export fuses LoRA layers with mlx-lm's own fuse


def test_the_training_table_takes_the_console_medlora_swaps_in_a_pipe():
    """medlora.training.progress_table replaces mlx_lm.cli_ui.make_console, which TrainUI calls when built."""
    import mlx_lm.tuner.trainer as trainer

    if not hasattr(trainer, "TrainUI"):
        pytest.skip("this mlx-lm prints plain lines, no table")
    from mlx_lm import cli_ui

    assert "make_console" in trainer.TrainUI.__init__.__code__.co_names and hasattr(cli_ui, "make_console")


@pytest.mark.parametrize("module", sorted(USED))
def test_the_mlx_lm_names_medlora_calls_exist(module):
    loaded = importlib.import_module(module)
    missing = [name for name in USED[module] if not hasattr(loaded, name)]
    assert not missing, f"mlx-lm {module} no longer has {missing}: update medlora before widening the mlx-lm bound"


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])  # SmolLM2 and the tiny model are llamas
def test_fastmath_finds_the_swiglu_it_replaces(architecture):
    """fast_kernels swaps the module-level `swiglu` of mlx-lm's model file, and restores it."""
    module = importlib.import_module(f"mlx_lm.models.{architecture}")
    original = getattr(module, "swiglu", None)
    assert original is not None, (f"mlx_lm.models.{architecture} has no module-level swiglu any more: "
                                  "medlora.models.fastmath would silently do nothing")

    class Model:  # stands for a loaded model: fast_kernels looks up its class's module
        pass

    Model.__module__ = module.__name__
    with fast_kernels(Model()) as swapped:
        assert swapped and module.swiglu is not original
    assert module.swiglu is original
