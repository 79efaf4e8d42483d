"""The one way a stage exits: user errors become one clear line and a non-zero status."""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from collections.abc import Callable

from forgetful.core.config import ConfigError, DataError


def quiet_library_noise() -> None:
    """Two lines every stage printed that are about no choice of the user's, quieted at
    their source (nothing else is): bitsandbytes' warning, on import, that the optional
    `kernels` package for 4-bit matmuls on CPU is absent (only a 4-bit model on a CPU would
    use it; QLoRA trains on CUDA), and the FutureWarning of PEFT reading transformers'
    deprecated `is_gradient_checkpointing`."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)


THREADS_ENV = "FORGETFUL_THREADS"


def limit_threads() -> int | None:
    """$FORGETFUL_THREADS=n: torch (and OpenMP, MKL) use n threads. Two torch jobs on the
    same cores each take them all and both slow 5-10x; give each a share instead."""
    value = os.environ.get(THREADS_ENV, "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"${THREADS_ENV}={value!r} must be a positive integer (threads per "
                          "stage), or unset to use every core")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = value
    import torch

    torch.set_num_threads(int(value))
    return int(value)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; bad params or data exit 2 with the message (DVC caches nothing)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_library_noise()
    try:
        limit_threads()
        main()
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise  # anything else is not the user's to fix from one line: the traceback
        where = f" writing {err.filename}" if err.filename else ""
        print(f"error: no space left on the device{where}: free some space (`df -h .`) and "
              "run again; this stage's outputs were not written (each is written to a "
              "temporary file and renamed only when whole), and DVC caches nothing from a "
              "stage that failed", file=sys.stderr)
        sys.exit(2)
