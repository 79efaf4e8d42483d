"""Data sources for format_data, by name: where a task's conversations come from.

- `builtin`: a generator of ours (forgetful/data/builtin_tasks.py), with a held-out part
  (other sentence frames, other names and nouns) that the test split is cut from.
- `file`: a local jsonl, json (array), csv, tsv or parquet file, read in one of the record
  formats of forgetful/formats.py with a column map.
- `hf_dataset`: a Hugging Face `datasets` dataset: a hub name at a pinned revision (needs
  the network or a warm cache), or a local folder written by `save_to_disk`.
- `self_distill`: built-in open instructions answered by the base model itself (greedy):
  replay data that needs no download and does not overlap the general suite. The answers
  come from `answer`, which format_data builds over the base model (this layer loads none).
- `self_play`: preference pairs with no download: a built-in task's gold answer (chosen)
  against the base model's own greedy answer where the task's metric says it is wrong
  (rejected); prompts it answers right give no pair. The test split's pairs come from the
  task's held-out part.

Every source returns its conversations in a fixed order; format_data deduplicates,
shuffles and splits them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from forgetful.core.artifacts import file_sha256, read_jsonl, read_utf8
from forgetful.core.config import ConfigError, DataError, build, require
from forgetful.data.builtin_tasks import GENERATORS, PROMPT_SETS
from forgetful.data.formats import FORMATS, required_columns
from forgetful.data.metrics import LIKELIHOOD_METRICS, METRICS
from forgetful.data.templates import TRAIN_TURNS


@dataclass(frozen=True)
class TaskSpec:
    n_train: int  # training examples (0 = all that remain after val and test)
    n_val: int  # validation examples (eval loss after training)
    n_test: int  # test examples (scored by evaluate)
    metric: str = ""  # how evaluate scores answers (or label_likelihood); empty = default
    evaluate: bool = True  # false = format and train on it, but do not score it (replay data)
    train_turns: str = "all"  # multi-turn chats: label all assistant turns, or the last only
    invalid_records: str = ""  # this task's malformed records: fail, skip ("" = format_data's)

    def __post_init__(self) -> None:
        require(self.invalid_records in ("", "fail", "skip"), "invalid_records",
                f"must be fail or skip (or absent: format_data.invalid_records), got "
                f"{self.invalid_records!r}")
        for name in ("n_train", "n_val", "n_test"):
            require(getattr(self, name) >= 0, name, "must be >= 0")
        require(self.n_test > 0 or not self.evaluate, "n_test",
                "must be > 0 for a task that is evaluated (or set evaluate: false)")
        choices = (*METRICS, *LIKELIHOOD_METRICS)
        require(self.metric in ("", *choices), "metric", f"must be one of {', '.join(choices)}")
        require(self.train_turns in TRAIN_TURNS, "train_turns",
                f"must be one of {', '.join(TRAIN_TURNS)}")


@dataclass(frozen=True)
class BuiltinSource(TaskSpec):
    source: Literal["builtin"] = "builtin"
    generator: str = ""  # one of builtin_tasks.GENERATORS
    # in-template test examples (training frames, unseen fillings), scored beside the
    # held-out test split and labelled as such; 0 = none
    n_in_template: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.generator in GENERATORS, "generator",
                f"must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        require(self.n_in_template >= 0, "n_in_template", "must be >= 0")


@dataclass(frozen=True)
class RowSource(TaskSpec):
    format: str = "prompt_completion"  # record format: see forgetful/formats.py
    columns: dict[str, str] = field(default_factory=dict)  # format's column -> your column
    labels: dict[str, str] = field(default_factory=dict)  # classification: label -> word
    instruction: str = ""  # classification: the question put before the text

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.format in FORMATS, "format",
                f"must be one of {', '.join(FORMATS)}, got {self.format!r}")


@dataclass(frozen=True)
class FileSource(RowSource):
    source: Literal["file"] = "file"
    path: str = ""  # .jsonl, .json (array of objects), .csv, .tsv or .parquet

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.path), "path", "must name a data file")
        require(Path(self.path).suffix.lower() in READERS, "path",
                f"must end in one of {', '.join(READERS)}, got {self.path!r}")


@dataclass(frozen=True)
class HFSource(RowSource):
    source: Literal["hf_dataset"] = "hf_dataset"
    name: str = ""  # hub dataset id, or a local folder written by save_to_disk
    config: str = ""  # the dataset's configuration name, if it has several
    revision: str = ""  # commit sha or tag; required for hub datasets
    split: str = "train"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.name), "name", "must name a hub dataset or a local folder")
        require(Path(self.name).is_dir() or bool(self.revision), "revision",
                "must pin a commit sha or tag for a hub dataset (reproducibility)")


@dataclass(frozen=True)
class SelfDistillSource(TaskSpec):
    source: Literal["self_distill"] = "self_distill"
    prompts: str = "general"  # built-in instruction set (builtin_tasks.PROMPT_SETS)
    max_new_tokens: int = 48  # answer length of the base model
    batch_size: int = 16  # prompts per generation batch
    evaluate: bool = False  # replay data: trained on, never scored

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.prompts in PROMPT_SETS, "prompts",
                f"must be one of {', '.join(PROMPT_SETS)}, got {self.prompts!r}")
        require(not self.evaluate, "evaluate", "must be false: the base model's own answers "
                "are replay data, not a test of it")
        require(self.max_new_tokens > 0, "max_new_tokens", "must be a positive integer")
        require(self.batch_size > 0, "batch_size", "must be a positive integer")


@dataclass(frozen=True)
class SelfPlaySource(TaskSpec):
    """Preference pairs with no download: a built-in task's gold answer (chosen) against the
    base model's own greedy answer where the task's metric says it is wrong (rejected), as
    in self-play fine-tuning (Chen et al. 2024, SPIN)."""

    source: Literal["self_play"] = "self_play"
    generator: str = ""  # one of builtin_tasks.GENERATORS
    max_prompts: int = 400  # training-part prompts the base answers (a fixed shuffled subset)
    heldout_prompts: int = 160  # held-out prompts it answers (the test split's pool)
    max_new_tokens: int = 16  # answer length of the base model
    batch_size: int = 16  # prompts per generation batch

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.generator in GENERATORS, "generator",
                f"must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        require(self.metric in ("", "preference"), "metric",
                "must be preference (or absent): self-play pairs are scored by preference "
                "accuracy")
        for name in ("max_prompts", "heldout_prompts", "max_new_tokens", "batch_size"):
            require(getattr(self, name) > 0, name, "must be a positive integer")


Answerer = Callable[[list[str], int, int], list[str]]  # instructions, tokens, batch -> answers


def self_play_pairs(pairs: list[tuple[str, str]], spec: SelfPlaySource, limit: int,
                    answer: Answerer | None) -> tuple[list[list[dict]], list[str]]:
    """(gold, the base's wrong answer) pairs from the first `limit` of `pairs` in a fixed
    shuffled order; and a line per prompt the base answered right (or emptily): no pair."""
    import random

    if answer is None:
        raise DataError("source self_play needs the base model to answer its prompts "
                        "(format_data passes it)")
    order = list(range(len(pairs)))
    random.Random(f"self_play-{spec.generator}").shuffle(order)
    picked = [pairs[i] for i in order[:limit]]
    answers = answer([q for q, _ in picked], spec.max_new_tokens, spec.batch_size)
    metric = GENERATORS[spec.generator][1]
    right = METRICS.get(metric, METRICS["exact_match"])
    out, skipped = [], []
    for (q, gold), a in zip(picked, answers, strict=True):
        a = a.strip()
        if not a or right(a, gold) or a == gold:
            skipped.append(q)
            continue
        out.append([{"role": "user", "content": q},
                    {"role": "assistant", "content": gold, "rejected": a}])
    return out, skipped


def _read_json(path: Path) -> list[dict]:
    text = read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        before = text[: err.pos].rstrip()
        if before.endswith(",") and text[err.pos : err.pos + 1] in ("]", "}"):
            line = text[: len(before)].count("\n") + 1
            raise DataError(f"{path}:{line}: trailing comma before the closing "
                            f"'{text[err.pos]}' (JSON allows none); remove it") from None
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg}, column {err.colno})"
                        ) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON array of objects")
    return data


def _read_table(path: Path) -> list[dict]:
    import pandas as pd

    if path.suffix.lower() != ".parquet":
        read_utf8(path)  # a decoding error names the file and line
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


def rows_to_conversations(rows: list[dict], spec: RowSource, columns: Any, origin: str,
                          skip_invalid: bool = False) -> tuple[list[list[dict]], list[str]]:
    """Apply the format and column map; errors name the origin, the record and the columns.

    With `skip_invalid`, a record that fails is left out and its error returned instead."""
    if not rows:
        raise DataError(f"{origin}: no records")
    present = list(rows[0])
    for column in required_columns(columns):
        if column not in present:
            raise DataError(
                f"{origin}: column '{column}' not found; columns are: "
                f"{', '.join(map(str, present))} (set the task's columns: map in params.yaml)"
            )
    convert = FORMATS[spec.format].to_conversation
    conversations, invalid = [], []
    for i, row in enumerate(rows, start=1):
        try:
            conversations.append(convert(row, columns, f"{origin} record {i} (1-based)", spec))
        except DataError as err:
            if not skip_invalid:
                raise
            invalid.append(str(err))
    return conversations, invalid


def as_conversations(pairs: list[tuple[str, str]]) -> list[list[dict]]:
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": a}]
            for p, a in pairs]


def _builtin(spec: BuiltinSource, columns: Any, skip: bool,
             answer: Answerer | None) -> tuple[list[list[dict]], list]:
    return as_conversations(GENERATORS[spec.generator][0]().seen), []


def _self_distill(spec: SelfDistillSource, columns: Any, skip: bool,
                  answer: Answerer | None) -> tuple[list[list[dict]], list]:
    if answer is None:
        raise DataError("source self_distill needs the base model to answer its prompts "
                        "(format_data passes it)")
    prompts = PROMPT_SETS[spec.prompts]()
    answers = answer(prompts, spec.max_new_tokens, spec.batch_size)
    kept = [(p, a) for p, a in zip(prompts, answers, strict=True) if a.strip()]
    empty = [f"prompt {i}: the base model's answer is empty"
             for i, a in enumerate(answers, start=1) if not a.strip()]
    return as_conversations(kept), empty


def _self_play(spec: SelfPlaySource, columns: Any, skip: bool,
               answer: Answerer | None) -> tuple[list[list[dict]], list]:
    pairs, _ = self_play_pairs(GENERATORS[spec.generator][0]().seen, spec, spec.max_prompts,
                               answer)
    return pairs, []  # prompts the base got right give no pair: not invalid records


def _file(spec: FileSource, columns: Any, skip: bool,
          answer: Answerer | None) -> tuple[list[list[dict]], list]:
    path = Path(spec.path)
    if not path.exists():
        raise DataError(f"{path} not found; fix the task's path: in params.yaml (relative to "
                        "the repository root) or put the file there")
    rows = READERS[path.suffix.lower()](path)
    return rows_to_conversations(rows, spec, columns, str(path), skip)


def _hf_dataset(spec: HFSource, columns: Any, skip: bool,
                answer: Answerer | None) -> tuple[list[list[dict]], list]:
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
    return rows_to_conversations(loaded.to_list(), spec, columns, f"{spec.name}[{spec.split}]",
                                 skip)


Loader = Callable[[Any, Any, bool, Answerer | None], tuple[list[list[dict]], list]]
SOURCES: dict[str, tuple[type, Loader]] = {
    "builtin": (BuiltinSource, _builtin),
    "file": (FileSource, _file),
    "hf_dataset": (HFSource, _hf_dataset),
    "self_distill": (SelfDistillSource, _self_distill),
    "self_play": (SelfPlaySource, _self_play),
}


@dataclass(frozen=True)
class Task:
    name: str
    spec: Any  # the source's dataclass
    columns: Any  # the format's columns dataclass (None for builtin tasks)


def parse_task(name: str, data: Any) -> Task:
    """Validate one `format_data.tasks.<name>` block: its source, then its format's columns."""
    where = f"format_data.tasks.{name}"
    if not isinstance(data, dict) or "source" not in data:
        raise ConfigError(f"{where}.source is missing; it must be one of {', '.join(SOURCES)}")
    if data["source"] not in SOURCES:
        raise ConfigError(
            f"{where}.source must be one of {', '.join(SOURCES)}, got {data['source']!r}"
        )
    spec = build(SOURCES[data["source"]][0], data, where)
    columns = None
    if isinstance(spec, RowSource):
        columns = build(FORMATS[spec.format].columns, spec.columns, f"{where}.columns")
    return Task(name, spec, columns)


def load_conversations(task: Task, skip_invalid: bool = False, answer: Answerer | None = None
                       ) -> tuple[list[list[dict]], list]:
    """The task's conversations, and the errors of records skipped (with `skip_invalid`;
    a self_distill task's empty answers are always left out and counted). Errors name the
    task's params key first."""
    try:
        return SOURCES[task.spec.source][1](task.spec, task.columns, skip_invalid, answer)
    except DataError as err:
        raise DataError(f"format_data.tasks.{task.name}: {err}") from None


def heldout_conversations(task: Task, answer: Answerer | None = None
                          ) -> list[list[dict]] | None:
    """A built-in task's held-out part (the test split is cut from it), a self-play task's
    pairs from it; None for a task whose test split comes from the same pool as its
    training examples (files, datasets)."""
    if isinstance(task.spec, BuiltinSource):
        return as_conversations(GENERATORS[task.spec.generator][0]().heldout)
    if isinstance(task.spec, SelfPlaySource):
        try:
            return self_play_pairs(GENERATORS[task.spec.generator][0]().heldout, task.spec,
                                   task.spec.heldout_prompts, answer)[0]
        except DataError as err:
            raise DataError(f"format_data.tasks.{task.name}: {err}") from None
    return None


def provenance(task: Task) -> dict[str, Any]:
    """What the task's data came from, with a hash for local files (for run_info)."""
    spec = task.spec
    if isinstance(spec, FileSource):
        return {"path": spec.path, "format": spec.format, "sha256": file_sha256(spec.path)}
    if isinstance(spec, HFSource):
        return {"name": spec.name, "config": spec.config, "revision": spec.revision,
                "split": spec.split, "format": spec.format}
    if isinstance(spec, SelfDistillSource):
        return {"prompts": spec.prompts, "answers": "the base model's greedy answers",
                "max_new_tokens": spec.max_new_tokens}
    if isinstance(spec, SelfPlaySource):
        return {"generator": spec.generator, "chosen": "the task's gold answer",
                "rejected": "the base model's greedy answer where the task's metric says "
                            "it is wrong", "max_prompts": spec.max_prompts,
                "heldout_prompts": spec.heldout_prompts, "max_new_tokens": spec.max_new_tokens}
    return {"generator": spec.generator, "test": "held-out frames, names and nouns"}


def metric_of(task: Task) -> str:
    if task.spec.metric:
        return task.spec.metric
    if isinstance(task.spec, BuiltinSource):
        return GENERATORS[task.spec.generator][1]
    if isinstance(task.spec, RowSource) and task.spec.format == "classification":
        return "label_likelihood"  # classification: the likeliest label word
    if isinstance(task.spec, SelfPlaySource) or (
            isinstance(task.spec, RowSource) and task.spec.format == "preference"):
        return "preference"  # the chosen answer likelier than the rejected
    return "exact_match"
