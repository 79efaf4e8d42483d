"""Screenshots of what `mlflow ui` shows for this project's runs, for the README.

Starts `mlflow server` on the project's store (tracking.uri, else mlflow.db), finds the
newest run of the experiment (tracking.experiment) and saves, from headless Chromium:
- <out>/runs.png   the experiment's runs table (datasets, description, metrics columns);
- <out>/run.png    that run's page (datasets, logged models, registered version);
- <out>/model.png  the run's logged model (the adapter): source run, linked scores, files;
- <out>/registered.png  its Model Registry version with aliases, when the run has one
                   (`tracking.register` set when it ran).
Not in CI: it needs a browser (Debian: `apt-get install chromium`) and about a minute.

Run: python benchmarks/screenshots.py [--out reports/screenshots] [--chromium chromium]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = "1920,1000"  # pixels: wide enough for the runs table's datasets and models
TALL = "1920,1700"  # the run page: down to its logged models and first metrics
SETTLE_MS = 25000  # virtual time Chromium gives MLflow's single-page app to fetch and draw
# MLflow 3.17's UI opens in its GenAI view until the "Model training" switch is set (kept
# in the browser's localStorage); this query sets it for one page, as `make ui` prints it.
VIEW = "?workflowType=machine_learning"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow server did not answer at {url} within {seconds:.0f} s")


def shoot(chromium: str, url: str, path: Path, window: str = WINDOW) -> None:
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--window-size={window}",
                    f"--virtual-time-budget={SETTLE_MS}", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=180)
    print(f"screenshots: {url} -> {path}")


def main(out: Path, chromium: str) -> None:
    sys.path.insert(0, str(ROOT))
    from forgetful.core import tracking
    from forgetful.core.config import load_params

    if shutil.which(chromium) is None:
        raise SystemExit(f"{chromium} not found: install Chromium (Debian: apt-get install "
                         "chromium) or pass --chromium <path>")
    tp = tracking.load(load_params(ROOT / "params.yaml"))
    uri = tracking.tracking_uri(tp, ROOT)
    c = tracking.client(tp)
    experiment = c.get_experiment_by_name(tp.experiment)
    if experiment is None:
        raise SystemExit(f"{tracking.redact(uri)} has no experiment {tp.experiment!r}: "
                         "run `make run` first")
    runs = c.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                         max_results=1)
    if not runs:
        raise SystemExit(f"experiment {tp.experiment!r} has no run: run `make run` first")
    run_id = runs[0].info.run_id
    versions = c.search_model_versions(f"run_id = '{run_id}'")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", uri, "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        wait_for(url)
        eid = experiment.experiment_id
        shoot(chromium, f"{url}/#/experiments/{eid}{VIEW}", out / "runs.png")
        shoot(chromium, f"{url}/#/experiments/{eid}/runs/{run_id}{VIEW}",
              out / "run.png", TALL)
        models = c.search_logged_models([eid], filter_string=f"source_run_id = '{run_id}'",
                                        max_results=1)
        if models:  # the logged model's page: its source run, linked scores, files
            shoot(chromium, f"{url}/#/experiments/{eid}/models/{models[0].model_id}{VIEW}",
                  out / "model.png")
        if versions:
            shoot(chromium, f"{url}/#/models/{versions[0].name}/versions/"
                            f"{versions[0].version}{VIEW}", out / "registered.png")
        else:
            print("screenshots: the run has no registered version (set tracking.register "
                  "before the run); registered.png not taken")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "screenshots")
    parser.add_argument("--chromium", default="chromium")
    a = parser.parse_args()
    main(a.out, a.chromium)
