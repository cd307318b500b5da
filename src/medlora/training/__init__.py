"""Training: one LoRA run on mlx-lm's trainer (loss, callbacks, memory model). Knows nothing of Optuna."""
