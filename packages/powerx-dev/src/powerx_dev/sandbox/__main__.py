"""`python -m powerx_dev.sandbox serve --scenario FILE`: the same as `powerx sandbox ...`."""

from __future__ import annotations

import sys

from powerx_dev.cli.sandbox import main

if __name__ == "__main__":
    sys.exit(main())
