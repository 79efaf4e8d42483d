"""The one way a stage exits: user errors become one clear line and a non-zero status."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from forgetful.core.config import ConfigError, DataError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; bad params or data exit 2 with the message (DVC caches nothing)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main()
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
