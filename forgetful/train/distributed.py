"""Training on several processes through an existing launcher: torchrun + Trainer (DDP).

`train_adapter.processes: N` makes the stage start itself again under
`python -m torch.distributed.run --standalone --nproc_per_node N` (torchrun): N processes
on this machine, NCCL on GPUs, gloo on CPU. transformers' Trainer (through accelerate)
then wraps the model in DDP, or FSDP with `strategy: fsdp`. Launched by hand with
torchrun's multi-node flags (README), the stage runs as is on every node. Global rank 0
writes the outputs and logs to MLflow; the other ranks only train.

`train_adapter.batch_size` is the batch of one forward pass over all processes together,
so N processes at the same batch_size see the same sequences per optimizer step as one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

# strategy -> TrainingArguments for it. FSDP shards parameters, gradients and optimizer
# state across processes, for models that do not fit on one device; use_orig_params lets
# frozen and trainable (adapter) weights share a shard.
STRATEGIES: dict[str, dict[str, Any]] = {
    "ddp": {},
    "fsdp": {"fsdp": "full_shard auto_wrap", "fsdp_config": {"use_orig_params": True}},
}


def precision_args(precision: str, cuda: bool, bf16_ok: bool) -> dict[str, bool]:
    """auto: bf16 autocast on a GPU that has it, float32 otherwise (bf16 on a CPU without
    native support is several times slower); fp32, bf16, fp16: as named."""
    if precision == "auto":
        precision = "bf16" if cuda and bf16_ok else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets it)."""
    return "LOCAL_RANK" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def relaunch(processes: int, module: str, argv: list[str]) -> None:
    """Run `python -m module argv` as `processes` processes under torchrun; exits with its
    status if any process fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={processes}", "-m", module, *argv]
    print("train_adapter: " + " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, check=False)
    if done.returncode:
        sys.exit(done.returncode)
