"""General-ability benchmarks: multiple-choice items the fine-tuning never trains.

Each benchmark is a list of items (context, choices, answer index) scored by
log-likelihood. Built-in ones are generated here (distractors are the other items'
answers, chosen with a fixed seed); file ones are read from the formats users have, each
rendered the way lm-evaluation-harness renders the same task:
- `mc_jsonl`: one JSON object a line: question, choices (list), answer (index).
- `piqa`: PIQA's goal, sol1, sol2 lines, with the labels file beside them.
- `mmlu_csv`: MMLU's headerless CSV: question, A, B, C, D, answer letter.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.config import DataError, require

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "England": "London", "Greece": "Athens", "Canada": "Ottawa", "Austria": "Vienna",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Poland": "Warsaw", "Kenya": "Nairobi", "Peru": "Lima", "Argentina": "Buenos Aires",
    "Thailand": "Bangkok", "South Korea": "Seoul", "Finland": "Helsinki", "Cuba": "Havana",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad",
    "light": "dark", "open": "closed", "early": "late", "full": "empty", "hard": "soft",
    "young": "old", "wet": "dry", "strong": "weak", "rich": "poor", "loud": "quiet",
    "high": "low", "near": "far", "thick": "thin", "clean": "dirty", "first": "last",
}
FACTS = [
    ("Which animal says moo?", "cow", ["dog", "cat", "duck"]),
    ("Which animal barks?", "dog", ["cow", "fish", "owl"]),
    ("What colour is the sky on a clear day?", "blue", ["green", "red", "purple"]),
    ("What colour is grass?", "green", ["blue", "pink", "black"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many days are in a week?", "seven", ["five", "ten", "twelve"]),
    ("What do bees make?", "honey", ["milk", "silk", "bread"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
    ("What is the largest ocean on Earth?", "Pacific", ["Atlantic", "Indian", "Arctic"]),
    ("What do you use to write on paper?", "pen", ["spoon", "shoe", "plate"]),
    ("Which season comes after winter?", "spring", ["summer", "autumn", "winter"]),
    ("What is the opposite of day?", "night", ["noon", "week", "sun"]),
    ("Which animal can fly?", "bird", ["fish", "horse", "snake"]),
    ("What gas do people need to breathe?", "oxygen", ["helium", "smoke", "steam"]),
    ("How many hours are in a day?", "twenty-four", ["twelve", "ten", "sixty"]),
    ("Which fruit is yellow and curved?", "banana", ["apple", "grape", "cherry"]),
    ("What is the capital letter after A?", "B", ["C", "Z", "D"]),
    ("Where do fish live?", "water", ["trees", "sand", "clouds"]),
    ("What do cows drink?", "water", ["milk", "oil", "juice"]),
]


def _from_mapping(mapping: dict[str, str], question: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    answers = sorted(set(mapping.values()))
    items = []
    for key, answer in mapping.items():
        choices = rng.sample([a for a in answers if a != answer], 3) + [answer]
        rng.shuffle(choices)
        items.append({"context": f"Question: {question.format(key)}\nAnswer:",
                      "choices": choices, "answer": choices.index(answer)})
    return items


def capitals() -> list[dict]:
    return _from_mapping(CAPITALS, "What is the capital of {}?", seed=1)


def opposites() -> list[dict]:
    return _from_mapping(OPPOSITES, "What is the opposite of {}?", seed=2)


def facts() -> list[dict]:
    rng = random.Random(3)
    items = []
    for question, answer, wrong in FACTS:
        choices = [answer, *wrong]
        rng.shuffle(choices)
        items.append({"context": f"Question: {question}\nAnswer:", "choices": choices,
                      "answer": choices.index(answer)})
    return items


def _mc_jsonl(path: Path, labels: str) -> list[dict]:
    items = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            choices, answer = list(row["choices"]), int(row["answer"])
            items.append({"context": f"Question: {row['question']}\nAnswer:",
                          "choices": [str(c) for c in choices], "answer": answer})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}:{lineno}: expected question, choices (a list) and answer "
                            f"(an index) ({err})") from err
        if not 0 <= answer < len(choices):
            raise DataError(f"{path}:{lineno}: answer {answer} is not an index of the choices")
    return items


def _piqa(path: Path, labels: str) -> list[dict]:
    if not labels or not Path(labels).exists():
        raise DataError(f"{path}: PIQA needs its labels file (labels: valid-labels.lst)")
    answers = [int(x) for x in Path(labels).read_text().split()]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(rows) != len(answers):
        raise DataError(f"{path}: {len(rows)} questions but {labels} has {len(answers)} labels")
    # lm-eval's piqa task: "Question: {goal}\nAnswer:" with choices [sol1, sol2]
    return [{"context": f"Question: {r['goal']}\nAnswer:", "choices": [r["sol1"], r["sol2"]],
             "answer": a} for r, a in zip(rows, answers, strict=True)]


def _mmlu_csv(path: Path, labels: str) -> list[dict]:
    items = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if len(row) != 6 or row[5].strip() not in "ABCD" or not row[5].strip():
                raise DataError(f"{path}:{lineno}: expected question, A, B, C, D, answer letter")
            question = row[0].strip() + "".join(f"\n{k}. {v.strip()}"
                                                for k, v in zip("ABCD", row[1:5], strict=True))
            # lm-eval's mmlu: the letters are the choices
            items.append({"context": f"{question}\nAnswer:", "choices": list("ABCD"),
                          "answer": "ABCD".index(row[5].strip())})
    return items


FILE_FORMATS: dict[str, Callable[[Path, str], list[dict]]] = {
    "mc_jsonl": _mc_jsonl, "piqa": _piqa, "mmlu_csv": _mmlu_csv,
}


@dataclass(frozen=True)
class FileBenchmark:
    format: str  # mc_jsonl, piqa or mmlu_csv
    path: str  # the data file
    labels: str = ""  # PIQA's labels file
    limit: int = 0  # first N items only (0 = all)

    def __post_init__(self) -> None:
        require(self.format in FILE_FORMATS, "format",
                f"must be one of {', '.join(FILE_FORMATS)}, got {self.format!r}")
        require(bool(self.path), "path", "must name a file")
        require(self.limit >= 0, "limit", "must be >= 0")


def load_file_benchmark(spec: FileBenchmark) -> list[dict]:
    path = Path(spec.path)
    if not path.exists():
        raise DataError(f"{path} not found (evaluate.files)")
    items = FILE_FORMATS[spec.format](path, spec.labels)
    if not items:
        raise DataError(f"{path}: no items")
    return items[: spec.limit] if spec.limit else items


def suite(names: Any, files: dict[str, FileBenchmark]) -> dict[str, list[dict]]:
    """Every general benchmark by name: built-in ones, then file ones."""
    loaded = {name: BENCHMARKS[name]() for name in names}
    loaded.update({name: load_file_benchmark(spec) for name, spec in files.items()})
    return loaded


def question_of(item: dict) -> str:
    """The question without lm-eval's "Question: ... Answer:" frame (for contamination)."""
    return item["context"].removeprefix("Question: ").removesuffix("\nAnswer:")


BENCHMARKS: dict[str, Callable[[], list[dict]]] = {
    "capitals": capitals,
    "opposites": opposites,
    "facts": facts,
}

# Open-ended prompts shown before and after tuning in the report (the deck's example first).
GENERAL_PROMPTS = [
    "Charlie the cat roamed the garden at night. What is the name of the cat?",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "What is 12 plus 7?",
    "Name three colours.",
    "Give me a synonym for happy.",
]
