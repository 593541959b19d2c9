"""Sensors of the rollout DAGs."""
