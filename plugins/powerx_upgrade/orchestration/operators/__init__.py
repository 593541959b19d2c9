"""Operators of the rollout DAGs."""
