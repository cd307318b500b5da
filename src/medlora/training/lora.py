"""LoRA layers on a loaded mlx-lm model, and the adapter_config.json that goes with their weights."""

from __future__ import annotations

from mlx_lm.tuner.utils import linear_to_lora_layers

from medlora.config import RunConfig
from medlora.errors import UserError


def lora_parameters(cfg: RunConfig) -> dict:
    lora = {"rank": cfg.lora.rank, "scale": cfg.lora.scale, "dropout": cfg.lora.dropout}
    if cfg.lora.keys:
        lora["keys"] = list(cfg.lora.keys)
    return lora


def adapter_config(cfg: RunConfig, num_layers: int) -> dict:
    """What ``mlx_lm.load(..., adapter_path=...)`` needs, plus the base model it belongs to."""
    return {
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": lora_parameters(cfg),
        "base_model": cfg.model.name,
    }


def lora_layer_count(cfg: RunConfig, n_blocks: int) -> int:
    """How many blocks ``lora.num_layers`` adapts in a model of ``n_blocks``; UserError if it has fewer."""
    num_layers = n_blocks if cfg.lora.num_layers == -1 else cfg.lora.num_layers
    if num_layers > n_blocks:
        raise UserError(
            f"lora.num_layers={num_layers} but model {cfg.model.name} has {n_blocks} layers "
            f"(fix: lora.num_layers={n_blocks} or fewer, or -1 for all)"
        )
    return num_layers


def add_lora(model, cfg: RunConfig) -> int:
    """Freeze the base model and add LoRA layers to its last ``lora.num_layers`` blocks; return that count."""
    num_layers = lora_layer_count(cfg, len(model.layers))
    model.freeze()
    linear_to_lora_layers(model, num_layers, lora_parameters(cfg))
    return num_layers
