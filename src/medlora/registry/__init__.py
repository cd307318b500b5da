"""Registry: the champion adapter in MLflow's model registry (promote, roll back, model card, load)."""
