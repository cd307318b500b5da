"""Study: the Optuna search over training configurations under a memory cap, and its report."""
