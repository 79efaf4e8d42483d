"""Trainer callbacks of train_adapter: the training curve (DVC plot, MLflow, checkpoints),
the divergence guard, the kept snapshots (train_adapter.keep_every) and AdaLoRA's rank
budget step."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forgetful.core import tracking
from forgetful.core.config import NonFinite
from forgetful.train import checkpoints


def make_callback(tp: tracking.TrackingParams, run_id: str | None, curve: list[dict],
                  probes: list[dict]) -> Any:
    """The curve logger; `probes` (filled by the probe callback) is saved with the curve in
    each checkpoint, so a resumed run keeps the points measured before it stopped."""
    from transformers import TrainerCallback

    class CurveLogger(TrainerCallback):
        """Keeps the training curve for the DVC plot and mirrors it to MLflow."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # On a resumed run the state (step, tokens seen) comes from the checkpoint.
            self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen
            self.start_tokens = state.num_input_tokens_seen

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.exists():
                checkpoints.save_curve(folder, curve, probes)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
            if not logs or "loss" not in logs:
                return
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            point = {
                "step": state.global_step,
                "loss": round(float(logs["loss"]), 5),
                "learning_rate": float(logs.get("learning_rate", 0.0)),
                "tokens_per_s": round((tokens - self.tokens0) / max(now - self.t0, 1e-9), 1),
            }
            self.t0, self.tokens0 = now, tokens
            curve.append(point)
            tracking.log_metrics(tp, run_id, {k: v for k, v in point.items() if k != "step"},
                                 step=state.global_step)

    return CurveLogger()


def rank_allocator() -> Any:
    from transformers import TrainerCallback

    class RankAllocator(TrainerCallback):
        """AdaLoRA's budget step: after the optimizer step, before gradients are zeroed."""

        def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                              **kw: Any) -> None:
            model.base_model.update_and_allocate(state.global_step)

    return RankAllocator


def divergence_guard(learning_rate: float, warmup_steps: int, precision: str) -> Any:
    """Stops training at the first step whose loss or gradient norm is NaN or infinite
    (Trainer logs every step, unfiltered: logging_nan_inf_filter is off). Training on
    would only write NaN weights for DVC to cache and the next stages to trip on."""
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(float(value)):
                    what = key.replace("_", " ")
                    raise NonFinite(
                        f"training diverged at step {state.global_step}: the {what} is "
                        f"{float(value)}; lower train_adapter.learning_rate (now "
                        f"{learning_rate:g}), add warm-up (train_adapter.warmup_steps, now "
                        f"{warmup_steps}) or set train_adapter.precision: fp32 (now "
                        f"{precision}); nothing was written")

    return DivergenceGuard()


def keeper(folder: Path, every: int, max_steps: int, save: Callable[[Any, Path, int], None]
           ) -> Any:
    """Every `every` optimizer steps before the last, `save(model, folder/step-NNNNN, step)`
    writes the trained weights as they are (the last step's are the stage's adapter): the
    candidates an earlier stop would have given."""
    from transformers import TrainerCallback

    class Keeper(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                        **kw: Any) -> None:
            step = state.global_step
            if state.is_world_process_zero and step % every == 0 and step < max_steps:
                save(model, folder / f"step-{step:05d}", step)

    return Keeper()
