"""Stage train_adapter: PEFT training on the mixture, loss on completion tokens only.

Deps:   this module, forgetful.train (trainer, methods, completion loss, probes), models/base,
        data/mixed, data/eval (gather_eval: the held-out task items the probe scores).
Params: train_adapter.* (seed, method and its block, optimisation and batch settings,
        evaluate_every and the probe's items).
Outs:   <out>/ adapter in PEFT's format (adapter_config.json, adapter_model.safetensors)
        with run_info.json (which holds the MLflow run id); metrics <metrics>; the training
        curve <curve> (CSV: step, loss, learning_rate) as a DVC plot; tokens/s per step
        goes to MLflow only, so the curve is the same bytes on every identical run; with
        evaluate_every > 0, the probe points <probe> (CSV: step, general suite subsample,
        each evaluated task's held-out items; forgetful/train/probes.py), also in MLflow;
        <kept>/step-NNNNN/: with keep_every > 0, the weights every keep_every steps before
        the last, each in the adapter's own format with its run_info.json (for full
        fine-tuning each is a whole model: 540 MB a snapshot for the default base in fp32),
        and <kept>/steps.json listing them (empty without keep_every).
Run:    python -m stages.train_adapter --base models/base --data data/mixed \
            --out models/adapter --metrics reports/metrics/train.json \
            --curve reports/plots/train_curve.csv --eval-sets data/eval \
            --probe reports/plots/probe_curve.csv --kept models/kept

Uses transformers' Trainer (optimizer, schedule, accumulation, devices, DDP/FSDP under
torchrun, checkpoints); our code tokenizes with label masking, computes the output layer
only where a label is (forgetful/train/completion_loss.py), resumes from checkpoints of the
same inputs, and logs to MLflow from a callback. The adapter folder is the same bytes on
every identical run, so re-running this stage after a code change that does not change
the result re-runs nothing below it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forgetful.core import tracking
from forgetful.core.artifacts import (
    atomic_dir,
    dvc_md5,
    git_commit,
    peak_gpu_memory_mb,
    peak_memory_mb,
    read_json,
    read_jsonl,
    run_info,
    weights_sha256,
    write_json,
    write_text,
)
from forgetful.core.cli import run_stage
from forgetful.core.config import DataError, NonFinite, load_params, section
from forgetful.train import checkpoints, distributed
from forgetful.train.callbacks import keeper, make_callback
from forgetful.train.probes import probe_callback, probe_set
from forgetful.train.trainer import (
    VOLATILE,
    TrainParams,
    encode_all,
    parse_params,
    require_pairs,
    rest_fields,
    sort_config_lists,
    train,
)


def open_run(p: TrainParams, params: dict, tp: tracking.TrackingParams, base_info: dict,
             resumed_run: str | None) -> str | None:
    """The MLflow run of this training: the interrupted run's, when resuming; else new."""
    if not distributed.is_main():  # one MLflow run, however many processes train
        return None
    if resumed_run and tracking.reopen(tp, resumed_run):
        return resumed_run
    # `dvc exp run -n <name>` (and the study's points) name the run after the experiment
    experiment = os.environ.get("DVC_EXP_NAME", "")
    return tracking.start_run(
        tp, run_name=experiment or f"{p.method}-{time.strftime('%Y%m%d-%H%M%S')}",
        params={"train_adapter": rest_fields(p) | {p.method: vars(p.method_params)},
                "mix_tasks": params.get("mix_tasks", {}), "format_data.template":
                params.get("format_data", {}).get("template")},
        tags={"git_commit": git_commit() or "", "method": p.method, "dvc_experiment": experiment,
              "base_model": str(base_info.get("base_model", {}).get("source"))})


def adapter_info(p: TrainParams, base: Path, base_info: dict, **extra: Any) -> dict:
    """The run_info.json beside trained weights (the adapter, a kept snapshot): the resolved
    params, the method and the base, which merge and evaluate read."""
    return run_info("train_adapter", {**rest_fields(p), p.method: vars(p.method_params)},
                    method=p.method, base_model=base_info.get("base_model"),
                    base_path=str(base), **extra)


def snapshot_writer(p: TrainParams, base: Path, base_info: dict) -> Any:
    """save(model, folder, step): the weights as they are at `step`, in the adapter's
    format, with its run_info.json."""
    def save(model: Any, folder: Path, step: int) -> None:
        with atomic_dir(folder) as tmp:
            model.save_pretrained(tmp)
            sort_config_lists(tmp / "adapter_config.json")
            write_json(tmp / "run_info.json", adapter_info(p, base, base_info, step=step))
    return save


def main(base: Path, data: Path, out: Path, metrics_path: Path, curve_path: Path,
         params_file: Path = Path("params.yaml"), checkpoint_dir: Path | None = None,
         eval_sets: Path | None = None, probe_path: Path | None = None,
         kept: Path | None = None) -> None:
    # snapshots live beside the checkpoints (a resumed run keeps those made before it),
    # else in a temporary folder gone when the stage ends
    with tempfile.TemporaryDirectory(prefix="kept-") as scratch:
        snapshots = checkpoint_dir / "kept" if checkpoint_dir is not None else Path(scratch)
        run(base, data, out, metrics_path, curve_path, params_file, checkpoint_dir,
            eval_sets, probe_path, kept, snapshots)


def run(base: Path, data: Path, out: Path, metrics_path: Path, curve_path: Path,
        params_file: Path, checkpoint_dir: Path | None, eval_sets: Path | None,
        probe_path: Path | None, kept: Path | None, snapshots: Path) -> None:
    params = load_params(params_file)
    p = parse_params(section(params, "train_adapter"))
    if p.keep_every and kept is None:
        raise DataError("train_adapter.keep_every is set but the stage has no --kept folder "
                        "to keep the snapshots in (dvc.yaml: --kept models/kept)")
    tp = tracking.load(params)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    records = read_jsonl(data / "train.jsonl")
    val_records = read_jsonl(data / "val.jsonl")
    if p.objective == "dpo":
        require_pairs(records, str(data / "train.jsonl"))
        require_pairs(val_records, str(data / "val.jsonl"))
    train_set, dropped = encode_all(records, tokenizer, p.max_length, p.objective)
    val_set, _ = encode_all(val_records, tokenizer, p.max_length, p.objective)
    if not train_set and not dropped:
        raise DataError(f"{data / 'train.jsonl'} is empty; nothing to train on")
    if dropped:
        print(f"train_adapter: dropped {dropped} of {len(train_set) + dropped} training "
              f"records longer than train_adapter.max_length={p.max_length} tokens; raise "
              "max_length to keep them", flush=True)
    if dropped > p.max_dropped_share * (len(train_set) + dropped):
        raise DataError(
            f"{data / 'train.jsonl'}: {dropped} of {len(train_set) + dropped} records are longer "
            f"than train_adapter.max_length={p.max_length} tokens, over max_dropped_share="
            f"{p.max_dropped_share}; raise max_length or shorten the records")
    base_info = read_json(base / "run_info.json")
    resume, resumed_run, key = None, None, ""
    if checkpoint_dir is not None:
        key = checkpoints.fingerprint(section(params, "train_adapter"),
                                      [data / "train.jsonl", data / "val.jsonl"],
                                      weights_sha256(base))
        resume, resumed_run = checkpoints.resume_point(checkpoint_dir, key,
                                                       clear_stale=distributed.is_main())
    run_id = open_run(p, params, tp, base_info, resumed_run)
    if checkpoint_dir is not None and distributed.is_main():
        checkpoints.start(checkpoint_dir, key, run_id)
    if resume is None:
        mix_info = read_json(data / "run_info.json")
        tracking.log_metrics(tp, run_id, {"mix": mix_info.get("composition", {})})
        tracking.log_datasets(tp, run_id, [
            {"name": "mixture", "digest": dvc_md5(data), "source": str(data),
             "context": "training", "profile": {"examples": len(train_set) + dropped,
                                                "tokens": mix_info.get("composition", {})
                                                .get("tokens")}}])
    else:
        print(f"train_adapter: resuming from {resume} (MLflow run {run_id})", flush=True)
    curve, points = checkpoints.load_curve(resume)
    probe, probe_items = None, {}
    if p.evaluate_every:
        items = probe_set(p.probe, eval_sets)
        probe_items = {"general": len(items.general)} | {t: len(r) for t, r in
                                                         items.tasks.items()}
        probe = probe_callback(items, tokenizer, p.probe, p.evaluate_every, points,
                               lambda m, step: tracking.log_metrics(tp, run_id, m, step=step))
    keep = keeper(snapshots, p.keep_every, p.max_steps, snapshot_writer(p, base, base_info)) \
        if p.keep_every else None
    try:
        model, metrics = train(p, base, train_set, val_set, tokenizer.pad_token_id,
                               make_callback(tp, run_id, curve, points),
                               output_dir=checkpoint_dir, resume=resume, probe=probe,
                               keep=keep)
    except NonFinite as err:  # a diverged run leaves nothing: no out, no checkpoint to resume
        tracking.fail(tp, run_id, str(err))
        if checkpoint_dir is not None and distributed.is_main():
            checkpoints.clear(checkpoint_dir)
        raise
    if not distributed.is_main():  # rank 0 writes the outputs
        return
    since = int(resume.name.split("-")[1]) if resume else -1  # points measured this session
    probe_seconds = sum(x["seconds"] for x in points if x["step"] > since)
    if probe_seconds:  # tokens/s of training alone
        busy = metrics["train_seconds"] - probe_seconds
        metrics["tokens_per_s"] = round(metrics["tokens_per_s"] * metrics["train_seconds"] /
                                        max(busy, 1e-9), 1)
    metrics |= {"probes": len(points), "probe_items": probe_items,
                "probe_seconds": round(probe_seconds, 1),
                "train_loss": round(sum(c["loss"] for c in curve) / len(curve), 5),
                "final_loss": curve[-1]["loss"], "dropped_too_long": dropped,
                "processes": distributed.world_size(),
                "resumed_from_step": max(since, 0)}
    metrics["kept_steps"] = sorted(int(d.name.split("-")[1]) for d in snapshots.glob("step-*")
                                   if d.is_dir()) if p.keep_every else []
    write_outputs(p, model, metrics, curve, base, base_info, out, metrics_path, curve_path)
    write_probe_curve(probe_path, points)
    if kept is not None:  # the snapshots (none without keep_every): an out like the adapter
        with atomic_dir(kept) as tmp:
            for step in metrics["kept_steps"]:
                shutil.copytree(snapshots / f"step-{step:05d}", tmp / f"step-{step:05d}")
            write_json(tmp / "steps.json", {"keep_every": p.keep_every,
                                            "steps": metrics["kept_steps"]})
    tracking.tag_adapter(tp, run_id, weights_sha256(out))
    tracking.log_metrics(tp, run_id, {f"train.{k}": v for k, v in metrics.items()})
    if metrics["adapter_mb"] < 200:  # a full fine-tune's whole model stays in DVC only
        # a logged model of the run: evaluate@tuned links its scores to it
        tracking.log_model(tp, run_id, "adapter", out,
                           {"method": p.method, p.method: vars(p.method_params)})
    tracking.finish(tp, run_id)
    if checkpoint_dir is not None:
        checkpoints.clear(checkpoint_dir)
    print(f"train_adapter: {metrics['steps']} steps, loss {metrics['train_loss']}, "
          f"{metrics['tokens_per_s']} tokens/s -> {out}")


def write_outputs(p: TrainParams, model: Any, metrics: dict, curve: list[dict], base: Path,
                  base_info: dict, out: Path, metrics_path: Path, curve_path: Path) -> None:
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        sort_config_lists(tmp / "adapter_config.json")
        metrics["adapter_mb"] = round(sum(f.stat().st_size for f in tmp.iterdir()) / 2**20, 3)
        metrics["peak_memory_mb"] = peak_memory_mb()  # the host's
        if (gpu_mb := peak_gpu_memory_mb()) is not None:
            metrics["peak_gpu_memory_mb"] = gpu_mb  # the device's (process 0's)
        write_json(tmp / "run_info.json", adapter_info(
            p, base, base_info, metrics={k: v for k, v in metrics.items() if k not in VOLATILE}))
    write_json(metrics_path, metrics)
    write_text(curve_path, "step,loss,learning_rate\n" + "".join(
        f"{c['step']},{c['loss']},{c['learning_rate']}\n" for c in curve))


def write_probe_curve(path: Path | None, points: list[dict]) -> None:
    """step, general, one column per task (DVC plot; the report draws it). Header only when
    the probe is off."""
    if path is None:
        return
    columns = ["step", *dict.fromkeys(k for x in points for k in x if k not in ("step",
                                                                            "seconds"))]
    write_text(path, ",".join(columns) + "\n" + "".join(
        ",".join(str(x.get(c, "")) for c in columns) + "\n" for x in points))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--base", "--data", "--out", "--metrics", "--curve"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="persistent folder for resumable checkpoints")
    parser.add_argument("--eval-sets", type=Path, default=None,
                        help="gather_eval's folder: the probe's held-out task items")
    parser.add_argument("--probe", type=Path, default=None,
                        help="CSV of the probe points (train_adapter.evaluate_every)")
    parser.add_argument("--kept", type=Path, default=None,
                        help="folder of the snapshots kept every train_adapter.keep_every steps")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()

    def start() -> None:
        p = parse_params(section(load_params(a.params), "train_adapter"))
        if p.processes > 1 and not distributed.launched():
            distributed.relaunch(p.processes, "stages.train_adapter", sys.argv[1:])
            return
        main(a.base, a.data, a.out, a.metrics, a.curve, a.params, a.checkpoints, a.eval_sets,
             a.probe, a.kept)

    run_stage(start)


if __name__ == "__main__":
    cli()
