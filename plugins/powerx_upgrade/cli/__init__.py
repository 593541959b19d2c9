"""The `powerx` command line: plan validation and preview, runs, approvals, artifacts (the dev
package adds `powerx sandbox` and `powerx demo`)."""
