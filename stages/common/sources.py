"""Data sources for format_data, by name: where a task's (instruction, answer) pairs come from.

- `builtin`: a generator of ours (stages/common/builtin_tasks.py).
- `file`: a local jsonl, json (array), csv, tsv or parquet file, with a column map.
- `hf_dataset`: a Hugging Face `datasets` dataset: a hub name at a pinned revision, or a
  local folder written by `save_to_disk`.

Every source returns the pairs in a fixed order; format_data shuffles and splits them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.common.artifacts import file_sha256, read_jsonl
from stages.common.builtin_tasks import GENERATORS
from stages.common.config import ConfigError, DataError, build, require

METRICS = ("exact_match", "contains", "numeric")


@dataclass(frozen=True)
class Columns:
    prompt: str = "prompt"  # column holding the instruction
    completion: str = "completion"  # column holding the answer
    input: str = ""  # optional column appended to the instruction (Alpaca's "input")


@dataclass(frozen=True)
class SplitSizes:
    n_train: int  # training examples (0 = all that remain after val and test)
    n_val: int  # validation examples (used for eval loss during training)
    n_test: int  # test examples (scored by evaluate)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            require(getattr(self, name) >= 0, name, "must be >= 0")
        require(self.n_test > 0, "n_test", "must be > 0: evaluate scores every task's test split")


@dataclass(frozen=True)
class BuiltinSource(SplitSizes):
    source: Literal["builtin"] = "builtin"
    generator: str = ""  # one of builtin_tasks.GENERATORS
    metric: str = ""  # empty = the generator's own metric

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.generator in GENERATORS, "generator",
                f"must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        require(self.metric in ("", *METRICS), "metric", f"must be one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class FileSource(SplitSizes):
    source: Literal["file"] = "file"
    path: str = ""  # .jsonl, .json (array of objects), .csv, .tsv or .parquet
    columns: Columns = field(default_factory=Columns)
    metric: str = "exact_match"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.path), "path", "must name a data file")
        require(Path(self.path).suffix.lower() in READERS, "path",
                f"must end in one of {', '.join(READERS)}, got {self.path!r}")
        require(self.metric in METRICS, "metric", f"must be one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class HFSource(SplitSizes):
    source: Literal["hf_dataset"] = "hf_dataset"
    name: str = ""  # hub dataset id, or a local folder written by save_to_disk
    config: str = ""  # the dataset's configuration name, if it has several
    revision: str = ""  # commit sha or tag; required for hub datasets
    split: str = "train"
    columns: Columns = field(default_factory=Columns)
    metric: str = "exact_match"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.name), "name", "must name a hub dataset or a local folder")
        require(Path(self.name).is_dir() or bool(self.revision), "revision",
                "must pin a commit sha or tag for a hub dataset (reproducibility)")
        require(self.metric in METRICS, "metric", f"must be one of {', '.join(METRICS)}")


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno} ({err.msg})") from err
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON array of objects")
    return data


def _read_table(path: Path) -> list[dict]:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas raises many types; name the file either way
        raise DataError(f"{path}: could not be read as {path.suffix} ({err})") from err
    return frame.to_dict(orient="records")


READERS: dict[str, Callable[[Path], list[dict]]] = {
    ".jsonl": read_jsonl, ".json": _read_json, ".csv": _read_table, ".tsv": _read_table,
    ".parquet": _read_table,
}


def _cell(row: dict, column: str, where: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"{where}: column '{column}' is empty")
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: column '{column}' holds a {type(value).__name__}, expected text")
    return str(value).strip()


def rows_to_pairs(rows: list[dict], columns: Columns, origin: str) -> list[tuple[str, str]]:
    """Apply the column map; errors name the origin, the record number and the columns."""
    if not rows:
        raise DataError(f"{origin}: no records")
    wanted = [c for c in (columns.prompt, columns.completion, columns.input) if c]
    present = list(rows[0])
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DataError(
            f"{origin}: column '{missing[0]}' not found; "
            f"columns are: {', '.join(map(str, present))}"
            " (set the task's columns: map in params.yaml)"
        )
    pairs = []
    for i, row in enumerate(rows, start=1):
        where = f"{origin} record {i}"
        instruction = _cell(row, columns.prompt, where)
        if columns.input and str(row.get(columns.input) or "").strip():
            instruction = f"{instruction}\n{_cell(row, columns.input, where)}"
        pairs.append((instruction, _cell(row, columns.completion, where)))
    return pairs


def _builtin(spec: BuiltinSource) -> list[tuple[str, str]]:
    return GENERATORS[spec.generator][0]()


def _file(spec: FileSource) -> list[tuple[str, str]]:
    path = Path(spec.path)
    if not path.exists():
        raise DataError(f"{path} not found (format_data task path)")
    return rows_to_pairs(READERS[path.suffix.lower()](path), spec.columns, str(path))


def _hf_dataset(spec: HFSource) -> list[tuple[str, str]]:
    import datasets

    if Path(spec.name).is_dir():
        loaded = datasets.load_from_disk(spec.name)
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise DataError(f"{spec.name}: no split '{spec.split}'; splits: {list(loaded)}")
            loaded = loaded[spec.split]
    else:
        loaded = datasets.load_dataset(
            spec.name, spec.config or None, revision=spec.revision, split=spec.split
        )
    return rows_to_pairs(loaded.to_list(), spec.columns, f"{spec.name}[{spec.split}]")


SOURCES: dict[str, tuple[type, Callable[[Any], list[tuple[str, str]]]]] = {
    "builtin": (BuiltinSource, _builtin),
    "file": (FileSource, _file),
    "hf_dataset": (HFSource, _hf_dataset),
}


def parse_task(name: str, data: Any) -> Any:
    """Validate one `format_data.tasks.<name>` block with its source's dataclass."""
    where = f"format_data.tasks.{name}"
    if not isinstance(data, dict) or "source" not in data:
        raise ConfigError(f"{where}.source is missing; it must be one of {', '.join(SOURCES)}")
    if data["source"] not in SOURCES:
        raise ConfigError(
            f"{where}.source must be one of {', '.join(SOURCES)}, got {data['source']!r}"
        )
    return build(SOURCES[data["source"]][0], data, where)


def load_pairs(spec: Any) -> list[tuple[str, str]]:
    return SOURCES[spec.source][1](spec)


def provenance(spec: Any) -> dict[str, str]:
    """What the task's data came from, with a hash for local files (for run_info)."""
    if isinstance(spec, FileSource):
        return {"path": spec.path, "sha256": file_sha256(spec.path)}
    if isinstance(spec, HFSource):
        return {"name": spec.name, "config": spec.config, "revision": spec.revision,
                "split": spec.split}
    return {"generator": spec.generator}


def metric_of(spec: Any) -> str:
    if isinstance(spec, BuiltinSource) and not spec.metric:
        return GENERATORS[spec.generator][1]
    return spec.metric
