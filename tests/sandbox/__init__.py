"""Sandbox platform tests: scenario files, metric engine, and the contract over real HTTP."""
