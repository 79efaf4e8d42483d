"""Writing outputs atomically and describing them with run_info.json.

DVC caches whatever a stage leaves behind when it exits 0, so every out is written to a
temporary sibling and renamed into place only when complete: a crash leaves nothing that
looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from forgetful.core.config import DataError

PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate", "dvc", "mlflow")


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `final` when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    tmp.rename(final)


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically (temporary sibling, then rename)."""
    write_bytes(path, text.encode())


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file atomically (temporary sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:  # a full disk mid-write: no half-written temporary left behind
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found; run the stage that produces it (dvc repro)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err


def read_utf8(path: str | Path) -> str:
    """A text file's contents; bytes that are not UTF-8 are a DataError naming the file,
    the line and the fix (the standard library's UnicodeDecodeError names neither)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x} at column {column}); "
            f"re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > "
            f"{path.stem}.utf8{path.suffix}") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line; a bad line is a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found; run the stage that produces it (dvc repro)")
    for lineno, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from err
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def read_jsonl(path: str | Path) -> list[dict]:
    return [record for _, record in iter_jsonl(path)]


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    return file_digest(path, "sha256")


def dvc_md5(path: str | Path) -> str:
    """DVC's md5 of a file or folder, as dvc.lock writes it (a folder's is the md5 of its
    sorted file list, with ".dir"), so what MLflow names matches the DVC version."""
    import json

    path = Path(path)
    if path.is_file():
        return file_digest(path, "md5")
    entries = sorted(({"md5": file_digest(f, "md5"), "relpath": f.relative_to(path).as_posix()}
                      for f in path.rglob("*") if f.is_file()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def peak_gpu_memory_mb() -> float | None:
    """Peak memory torch allocated on the current CUDA device (the device's peak, which
    the host's RSS does not show), or None where no CUDA device was used."""
    torch = sys.modules.get("torch")  # not imported here: a stage without torch has no GPU
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def run_info(stage: str, params: Any, **extra: Any) -> dict[str, Any]:
    """The self-description written beside every artifact: params, inputs, versions.

    Deliberately nothing that changes from one identical run to the next (wall time, peak
    memory, MLflow run ids, the git commit): DVC identifies an out by its bytes, so a wall
    time or a commit id inside it would make a re-run after any commit look like new data
    and re-run every stage below. The code is pinned by dvc.lock (the md5 of every code
    dep); the commit is a tag of the MLflow run; timings and memory go to the stage's
    metrics file and to MLflow."""
    import dataclasses

    resolved = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params
    return {
        "stage": stage,
        "params": resolved,
        **extra,
        "packages": package_versions(),
    }


def require_safetensors(folder: str | Path) -> Path:
    """Weights are loaded only from safetensors (no pickle: a .bin can run code on load)."""
    folder = Path(folder)
    if not any(folder.glob("*.safetensors")):
        raise DataError(f"{folder} holds no *.safetensors weights; only safetensors are "
                        "loaded (convert .bin / .pt checkpoints first)")
    return folder


def weights_sha256(folder: str | Path) -> str:
    """One sha256 over a folder's *.safetensors files (name and bytes, sorted by name):
    the identity of an adapter or model's weights."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
