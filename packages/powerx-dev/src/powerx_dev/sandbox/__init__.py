"""The sandbox platform: a simulated PowerX fleet that serves the platform contract over HTTP.

Nothing here imports Airflow; the orchestrator talks to the sandbox exactly as it would talk to
a real PowerX deployment (see docs/platform-contract.md).
"""
