"""Where the dev tools find the repository's files: from this module's location in the checkout
(the package is installed editable from `packages/powerx-dev/src/`), never from the working
directory."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]
"""The repository checkout: packages/powerx-dev/src/powerx_dev/paths.py -> four levels up."""

CONFIG_DIR = REPO_ROOT / "include" / "config"
"""The example config: upgrade_policies.yaml, plans/, signing_keys/."""

SCENARIOS_DIR = CONFIG_DIR / "scenarios"
"""The bundled sandbox scenarios (`powerx demo --scenario NAME`)."""

DAGS_DIR = REPO_ROOT / "dags"
"""The DAG loader the local stack parses."""
