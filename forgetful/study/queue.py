"""Running the study's points on DVC's experiment queue, and finding the finished ones.

Every point is one DVC experiment, queued with `dvc exp run --queue -n <name> -S ...` and
run by `dvc queue start -j <study.jobs>` workers, each given cores / jobs torch threads
(FORGETFUL_THREADS). `experiments` lists the finished ones by name, from every commit.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import read_json
from forgetful.study.plan import Point


def dvc(*args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(["dvc", *args], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed:\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    return done.stdout


def experiments() -> dict[str, str]:
    """Finished experiments of every commit: name -> commit. A point's name holds the
    fingerprint of the pipeline it ran, so one run by other code has another name."""
    found = {}
    for baseline in json.loads(dvc("exp", "show", "--json", "--no-fetch", "--all-commits")
                               or "[]"):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") and not rev.get("error"):
                    found[rev["name"]] = rev["rev"]
    return found


def run_named(name: str, sets: list[str], cwd: Path) -> tuple[str, float]:
    """One DVC experiment named `name` run in a temporary workspace (`dvc exp run --temp
    -S ...`, its output on the console), an earlier one of that name removed first (a name
    already taken is refused); its commit and the wall seconds it took."""
    started = time.time()
    subprocess.run(["dvc", "exp", "remove", name], cwd=cwd, capture_output=True)
    subprocess.run(["dvc", "exp", "run", "--temp", "-n", name,
                    *(arg for s in sets for arg in ("-S", s))], cwd=cwd, check=True)
    return experiments()[name], round(time.time() - started, 1)


def stale(points: list[Point], names: list[str]) -> list[str]:
    """Finished names of the same configurations and overrides as `points`, made by other
    code (another fingerprint, or none: named before points carried one)."""
    wanted = {p.name for p in points}
    stems = {p.stem for p in points}
    return sorted(n for n in names if n not in wanted and
                  (n in stems or n.rsplit("-", 1)[0] in stems))


def longest_first(todo: list[Point], last: Path) -> list[Point]:
    """The points in the order to queue them: the configurations that took longest in the
    last report (`last`, its stage seconds) first, those it lacks before them, so the
    workers do not end on one long point alone (longest-processing-time-first
    scheduling; the order changes no result). A point that reuses another's training
    (`after`, a strength point) goes after every training point, in the order of the point it
    reuses, so that DVC's run cache holds that training when it starts."""
    took: dict[str, Any] = {c: x.get("info", {}).get("stage_seconds") for c, x in
                            (read_json(last).get("points", {}) if last.exists() else {}).items()}
    trained = sorted((pt for pt in todo if not pt.after),
                     key=lambda pt: -(took.get(pt.config) or math.inf))
    first = {}
    for k, pt in enumerate(trained):
        first.setdefault((pt.config, pt.seed), k)
    reuse = sorted((pt for pt in todo if pt.after),
                   key=lambda pt: first.get((pt.after, pt.seed), -1))
    return trained + reuse


WORKERS = re.compile(r"^Worker status: (\d+) active, (\d+) idle", re.MULTILINE)


def workers_short(status: str, queued: int, jobs: int) -> int:
    """How many queue workers to start again: DVC's celery workers on its filesystem
    broker can die of a half-written message (`Unrecoverable error: JSONDecodeError`,
    treeverse/dvc#10428, celery/kombu#1551), leaving the queue to fewer workers or none."""
    found = WORKERS.search(status)
    if not queued or not found:
        return 0
    return max(0, jobs - int(found[1]) - int(found[2]))


def run_points(todo: list[Point], jobs: int) -> int:
    """Queue the points, run them with `jobs` workers, wait; a failed point stops here.
    A worker that dies while points wait is started again; returns how many times."""
    for point in todo:
        args = ["exp", "run", "--queue", "-n", point.name]
        for s in point.sets:  # ++: set the key whether params.yaml has it or not
            args += ["-S", f"++{s}"]
        dvc(*args)
        print(f"run_study: queued {point.name} ({point.config}, seed {point.seed})", flush=True)
    # torch uses every core by default: two workers would fight over them (5-10x slower)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "FORGETFUL_THREADS": str(threads)}  # every stage applies it

    def start() -> None:
        # the workers outlive `dvc queue start` and would hold a captured pipe open
        subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    start()
    started, names, shown, restarts = time.perf_counter(), {p.name for p in todo}, -1, 0
    while True:
        time.sleep(10)
        status = dvc("queue", "status", check=False)
        states = {line.split()[1]: line.split()[-1] for line in status.splitlines()[1:]
                  if len(line.split()) >= 3 and line.split()[1] in names}
        active = [n for n, s in states.items() if s in ("Queued", "Running")]
        failed = [n for n, s in states.items() if s == "Failed"]
        if failed:
            raise RuntimeError(f"point {failed[0]} failed: see `dvc queue logs {failed[0]}`; "
                               "once fixed, `dvc queue remove --failed` and run again (the "
                               "points that finished are kept)")
        if not active:
            break
        short = workers_short(status, sum(s == "Queued" for s in states.values()), jobs)
        if short:
            restarts += short
            print(f"run_study: {short} queue worker(s) stopped while points wait "
                  "(.dvc/tmp/exps/celery/dvc-exp-worker-*.out); starting again", flush=True)
            start()
        if len(names) - len(active) != shown:
            shown = len(names) - len(active)
            print(f"run_study: {shown}/{len(names)} points done "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    return restarts
