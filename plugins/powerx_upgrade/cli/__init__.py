"""The `powerx` command line: plan validation and preview, the sandbox platform."""
