"""Study workers on a small CPU: one process with every thread, or one process per core?

Trains LoRA for --steps steps on the default mixture (`make run` first: models/base,
data/mixed) once in one process with all cores' threads, then in --cores processes at
once with one thread each, and writes the throughput of both to reports/study/workers.json.
`study.jobs` in params.yaml is set from it.

Run: python benchmarks/workers.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(threads: int, steps: int, tag: str) -> None:
    """Child: train `steps` steps with `threads` torch threads; print its seconds."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from forgetful.core.config import load_params
    from stages.run_study import trial

    params = load_params("params.yaml")
    params["train_adapter"].update(checkpoint_every=0)
    started = time.perf_counter()
    trial(params, "lora", 1e-3, steps, Path(f".dvc/tmp/workers_bench/{tag}"))
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))


def run(threads: int, steps: int, count: int) -> list[float]:
    """`count` children at once; their seconds."""
    procs = [subprocess.Popen([sys.executable, __file__, "--child", str(threads), "--steps",
                               str(steps), "--tag", f"t{threads}-{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for i in range(count)]
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a training child failed (exit {p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1])["seconds"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/study/workers.json")
    a = parser.parse_args()
    if a.child:
        one(a.child, a.steps, a.tag)
        return
    whole = run(a.cores, a.steps, 1)
    split = run(1, a.steps, a.cores)
    rate_whole = a.steps / whole[0]
    rate_split = a.cores * a.steps / max(split)
    result = {"cores": a.cores, "steps_each": a.steps, "method": "lora",
              "one_process_all_threads_s": whole[0], "per_core_processes_s": split,
              "steps_per_s": {"one process": round(rate_whole, 3),
                              f"{a.cores} processes": round(rate_split, 3)},
              "ratio": round(rate_split / rate_whole, 2),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
