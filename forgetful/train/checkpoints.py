"""Training checkpoints that survive a killed `dvc repro`: resume, don't restart.

train_adapter writes its checkpoints to `checkpoints/train_adapter/`, a git-ignored work
folder that is not a DVC out: DVC neither deletes it before the stage runs (a failed or
killed run's checkpoints stay) nor stores it, and the stage keeps DVC's run cache (which
DVC turns off for a stage with a `persist` out), so returning to params that were trained
before restores the adapter from the cache instead of training again. transformers'
Trainer writes each checkpoint there (adapter, optimizer, scheduler, RNG states, step,
log); `state.json` records which inputs they belong to (a fingerprint of the params, the
data and the base weights) and the MLflow run they log to. A run with the same
fingerprint resumes from the newest complete checkpoint and reattaches to that run;
anything else starts afresh. After a successful run the checkpoints are deleted (DVC's
cache then holds the result).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

STATE = "state.json"
CURVE = "curve.json"  # our training curve and probe points up to the checkpoint's step


def fingerprint(params: dict[str, Any], files: list[Path], weights: str) -> str:
    """The identity of a training run's inputs."""
    from forgetful.core.artifacts import file_sha256

    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(file_sha256(path).encode())
    digest.update(weights.encode())
    return digest.hexdigest()


def complete(folder: Path) -> bool:
    """Trainer writes trainer_state.json last, then our callback writes the curve; without
    both a checkpoint was cut short (resuming from it would lose the curve so far)."""
    return (folder / "trainer_state.json").exists() and any(folder.glob("rng_state*.pth")) \
        and (folder / CURVE).exists()


def resume_point(root: Path, key: str, clear_stale: bool = True
                 ) -> tuple[Path | None, str | None]:
    """(newest complete checkpoint, its MLflow run id) if `root` holds checkpoints of the
    same inputs; else (None, None), after emptying `root` (if clear_stale: the process
    that owns the folder; the other ranks only read it)."""
    state_file = root / STATE
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") == key:
            done = [d for d in root.glob("checkpoint-*") if complete(d)]
            if done:
                newest = max(done, key=lambda d: int(d.name.split("-")[1]))
                return newest, state.get("mlflow_run_id")
    if clear_stale:
        clear(root)
    return None, None


def start(root: Path, key: str, run_id: str | None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / STATE).write_text(json.dumps({"fingerprint": key, "mlflow_run_id": run_id}) + "\n")


def save_curve(checkpoint: Path, curve: list[dict], probes: list[dict]) -> None:
    (checkpoint / CURVE).write_text(json.dumps({"curve": curve, "probes": probes}))


def load_curve(checkpoint: Path | None) -> tuple[list[dict], list[dict]]:
    """(training curve, probe points) as they were when the checkpoint was saved."""
    if checkpoint is None or not (checkpoint / CURVE).exists():
        return [], []
    saved = json.loads((checkpoint / CURVE).read_text())
    return saved["curve"], saved["probes"]


def clear(root: Path) -> None:
    """Remove every checkpoint (and the state); the folder itself stays, empty."""
    if root.exists():
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    root.mkdir(parents=True, exist_ok=True)
