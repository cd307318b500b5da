"""Predict a training configuration's peak memory before it runs; measure it while it runs.

The prediction is a linear model calibrated by short probes on the real model:

    peak_gb = base_gb + tokens * (per_token_gb + per_token_layer_gb * lora_layers)

``tokens = batch_size * max_seq_length`` (the worst-case padded batch), ``base_gb``
is the weights plus fixed overhead, ``per_token_gb`` the activations every token
costs (embeddings, the vocabulary-wide logits and their gradient), and
``per_token_layer_gb`` what each LoRA-adapted block keeps for the backward pass
(frozen blocks before the first adapter keep nothing). Evaluation is forward
only, with its own batch size: its peak ``eval_gb`` is measured directly. The
prediction is the larger of the two. Three one-step training probes fit the
three coefficients and one forward probe gives ``eval_gb``; the fit is cached in
the study folder and reused on resume.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx_lm.tuner.utils import linear_to_lora_layers

from medlora.config import RunConfig
from medlora.files import write_file
from medlora.models.fastmath import fast_kernels
from medlora.models.load import load_model, model_path
from medlora.training.lora import lora_parameters
from medlora.training.loss import training_loss
from medlora.training.memory_guard import GB
SAFETY = 1.05  # predictions are inflated by 5%: better to skip a borderline config than to run it over the cap


@dataclass(frozen=True)
class MemoryModel:
    base_gb: float
    per_token_gb: float
    per_token_layer_gb: float
    eval_gb: float  # peak of one evaluation batch (forward only, eval_batch_size x max_seq_length)
    key: str  # what the calibration is valid for (model, sequence length, LoRA shape, eval batch)

    def predict_gb(self, batch_size: int, max_seq_length: int, lora_layers: int) -> float:
        tokens = batch_size * max_seq_length
        train_gb = self.base_gb + tokens * (self.per_token_gb + self.per_token_layer_gb * lora_layers)
        return SAFETY * max(train_gb, self.eval_gb)

    def max_layers(self, batch_size: int, max_seq_length: int, cap_gb: float, low: int, high: int, step: int) -> int:
        """The most LoRA layers in ``low, low+step, ..., high`` predicted within ``cap_gb`` (``low`` if none is)."""
        fitting = [n for n in range(low, high + 1, step) if self.predict_gb(batch_size, max_seq_length, n) <= cap_gb]
        return max(fitting, default=low)


def calibration_key(cfg: RunConfig) -> str:
    lora = (cfg.lora.rank, cfg.lora.keys)
    return (f"{model_path(cfg.model, cfg.paths.models)}|{cfg.model.dtype}|{cfg.train.max_seq_length}|"
            f"{lora}|eval{cfg.train.eval_batch_size}|{cfg.train.loss}|streams{cfg.train.cpu_streams},{cfg.train.eval_cpu_streams}|"
            f"fast{cfg.train.fast_math}")


def measure_step_gb(cfg: RunConfig, batch_size: int, lora_layers: int, train: bool = True) -> float:
    """Peak MLX memory of one compiled LoRA training step (as mlx-lm's trainer runs it) on a fresh model,
    or with ``train=False`` of one forward-only evaluation batch."""
    model, _ = load_model(cfg.model, cfg.paths.models)
    model.freeze()
    linear_to_lora_layers(model, lora_layers, lora_parameters(cfg))
    optimizer = optim.Adam(learning_rate=1e-5)
    seq = cfg.train.max_seq_length
    vocab = model.model.embed_tokens.weight.shape[0] if hasattr(model, "model") else 1000
    # The worst case: a full-length batch whose every position is in the loss, through the training loss.
    loss, extend_train, extend_eval = training_loss(cfg.train, model)
    extend = extend_train if train else extend_eval
    batch = next(extend(iter([(mx.random.randint(0, vocab, (batch_size, seq)), mx.array([[1, seq - 1]] * batch_size))])))
    loss_and_grad = nn.value_and_grad(model, loss)
    state = [model.state, optimizer.state]

    def step(*b):
        (value, ntoks), grad = loss_and_grad(model, *b)
        optimizer.update(model, grad)
        return value

    model.train(train)  # as mlx-lm's trainer and evaluate set it
    step = mx.compile(step, inputs=state, outputs=state) if train else (lambda *b: loss(model, *b)[0])
    mx.eval(model.parameters())
    mx.clear_cache()
    mx.reset_peak_memory()
    with fast_kernels(model, cfg.train.fast_math):
        mx.eval(step(*batch), state)
    peak = mx.get_peak_memory() / GB
    del model, optimizer, state
    mx.clear_cache()
    return peak


def calibrate(cfg: RunConfig, max_lora_layers: int) -> MemoryModel:
    """Fit the coefficients from three one-step probes (two batch sizes with one LoRA block, the larger
    with many) and measure one evaluation batch.

    The probe batches are ``cpu_streams`` and twice that many rows, so that both split into the same
    number of concurrently computed parts as the batches they predict.
    """
    many = max(2, max_lora_layers)
    small = cfg.train.cpu_streams if cfg.train.loss == "answer_only" else 1
    large = 2 * small
    eval_gb = measure_step_gb(cfg, cfg.train.eval_batch_size, 1, train=False)
    p_small = measure_step_gb(cfg, small, 1)
    p_large = measure_step_gb(cfg, large, 1)
    p_many = measure_step_gb(cfg, large, many)
    seq = cfg.train.max_seq_length
    per_token_one_layer = max(p_large - p_small, 0.0) / ((large - small) * seq)  # a + b
    per_token_layer = max(p_many - p_large, 0.0) / (large * seq * (many - 1))  # b
    per_token = max(per_token_one_layer - per_token_layer, 0.0)  # a
    base = p_small - small * seq * per_token_one_layer
    return MemoryModel(base, per_token, per_token_layer, eval_gb, calibration_key(cfg))


def cached(cfg: RunConfig, cache_file: Path) -> MemoryModel | None:
    """The calibration saved in ``cache_file`` if it was made for this configuration."""
    if not cache_file.exists():
        return None
    try:
        model = MemoryModel(**json.loads(cache_file.read_text()))
    except (TypeError, ValueError):  # an older or damaged file: calibrate again
        return None
    return model if model.key == calibration_key(cfg) else None


def save(model: MemoryModel, cache_file: Path) -> None:
    write_file(cache_file, json.dumps(asdict(model), indent=2))


def load_or_calibrate(cfg: RunConfig, max_lora_layers: int, cache_file: Path) -> MemoryModel:
    """The cached calibration, else a new one (not saved: call :func:`save` once it is accepted)."""
    return cached(cfg, cache_file) or calibrate(cfg, max_lora_layers)
