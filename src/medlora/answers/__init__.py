"""Answers: what a user gets from a model: safety triage, retrieval and sources, asking, evaluation."""
