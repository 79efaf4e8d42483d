"""General-ability benchmarks: multiple-choice items the fine-tuning never trains.

Each benchmark is a list of items (context, choices, answer index) scored by
log-likelihood. Built-in ones are generated here (distractors are the other items'
answers, chosen with a fixed seed); file ones are read from the formats users have, each
rendered the way lm-evaluation-harness renders the same task:
- `mc_jsonl`: one JSON object a line: question, choices (list), answer (index).
- `piqa`: PIQA's goal, sol1, sol2 lines, with the labels file beside them.
- `mmlu_csv`: MMLU's headerless CSV: question, A, B, C, D, answer letter.

Plain-text corpora measure the loss on general text (mean NLL per token, perplexity,
bits per byte), the other common measure of forgetting: the built-in `prose`, or a file
split into documents by blank lines (`paragraphs`), by WikiText's ` = Title = ` headings
(`wikitext`), or kept whole (`whole`).
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import iter_jsonl, read_utf8
from forgetful.core.config import DataError, require
from forgetful.evaluate.general import SKILLS

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
    for lineno, row in iter_jsonl(path):
        try:
            choices, answer = list(row["choices"]), int(row["answer"])
            items.append({"context": f"Question: {row['question']}\nAnswer:",
                          "choices": [str(c) for c in choices], "answer": answer})
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}:{lineno}: expected question, choices (a list) and answer "
                            f"(an index) ({err})") from err
        if not 0 <= answer < len(choices):
            raise DataError(f"{path}:{lineno}: answer {answer} is not an index of the choices")
    return items


def _piqa(path: Path, labels: str) -> list[dict]:
    if not labels or not Path(labels).exists():
        raise DataError(f"{path}: PIQA needs its labels file (labels: valid-labels.lst)")
    answers = [int(x) for x in Path(labels).read_text().split()]
    rows = list(iter_jsonl(path))
    if len(rows) != len(answers):
        raise DataError(f"{path}: {len(rows)} questions but {labels} has {len(answers)} labels")
    items = []
    for (lineno, r), a in zip(rows, answers, strict=True):
        if not all(isinstance(r.get(k), str) for k in ("goal", "sol1", "sol2")):
            raise DataError(f"{path}:{lineno}: expected goal, sol1 and sol2 (strings)")
        # lm-eval's piqa task: "Question: {goal}\nAnswer:" with choices [sol1, sol2]
        items.append({"context": f"Question: {r['goal']}\nAnswer:",
                      "choices": [r["sol1"], r["sol2"]], "answer": a})
    return items


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


# The built-in general suite's skills (forgetful.evaluate.general), and `facts`, the
# 20-item set of earlier versions.
BENCHMARKS: dict[str, Callable[[], list[dict]]] = {**SKILLS, "facts": facts}

PROSE = [
    "The river begins in the hills as a thin stream of cold water. It gathers rain from the "
    "slopes, passes through a small town with a stone bridge, and widens as it crosses the "
    "farmland. By the time it reaches the sea it is slow and brown, and boats carry grain "
    "along it to the harbour.",
    "Bread is made from flour, water, salt and yeast. The yeast feeds on the sugars in the "
    "dough and releases gas, which makes the dough rise. After it has risen, the baker "
    "shapes the loaf and bakes it in a hot oven until the crust is brown and the inside is "
    "soft.",
    "The library opens at nine in the morning and closes at six in the evening. Visitors may "
    "borrow up to five books at a time for three weeks. Children's books are kept on the "
    "ground floor, and the reading room on the first floor is reserved for quiet study.",
    "Honeybees live in colonies with a single queen, thousands of workers and a few hundred "
    "drones. The workers collect nectar and pollen from flowers, build the wax comb, and "
    "look after the young. In winter the bees cluster together to keep the hive warm.",
    "A bicycle converts the rider's effort into motion with remarkable efficiency. The "
    "pedals turn a chain that drives the rear wheel, and the gears let the rider choose "
    "between speed and force. Brakes press pads against the rim or a disc to slow the wheels.",
    "The museum's new exhibition tells the story of early printing. It shows a wooden "
    "press, trays of metal type, and some of the first printed books in the region. A "
    "short film explains how printing made books cheaper and helped ideas spread quickly.",
    "On a clear night, far from the lights of a city, thousands of stars can be seen. The "
    "band of the Milky Way stretches across the sky, and with a small telescope the moons "
    "of Jupiter appear as tiny points of light beside the planet.",
    "The recipe serves four people. Chop two onions and fry them gently in olive oil until "
    "they are soft. Add a tin of tomatoes, a pinch of salt and a little sugar, then simmer "
    "the sauce for twenty minutes while the pasta cooks.",
]


def prose() -> list[str]:
    return list(PROSE)


def _paragraphs(text: str) -> list[str]:
    return [" ".join(block.split()) for block in text.split("\n\n") if block.strip()]


WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $", re.M)


def _wikitext_articles(text: str) -> list[str]:
    starts = [m.start() for m in WIKITEXT_HEADING.finditer(text)] or [0]
    return [text[a:b].strip() for a, b in zip(starts, starts[1:] + [len(text)], strict=True)
            if text[a:b].strip()]


TEXT_SPLITS: dict[str, Callable[[str], list[str]]] = {
    "paragraphs": _paragraphs, "wikitext": _wikitext_articles,
    "whole": lambda text: [text] if text.strip() else [],
}
TEXTS: dict[str, Callable[[], list[str]]] = {"prose": prose}


@dataclass(frozen=True)
class TextBenchmark:
    path: str  # a UTF-8 plain-text file
    split: str = "paragraphs"  # paragraphs | wikitext | whole: how it splits into documents
    limit: int = 0  # first N documents only (0 = all)

    def __post_init__(self) -> None:
        require(self.split in TEXT_SPLITS, "split",
                f"must be one of {', '.join(TEXT_SPLITS)}, got {self.split!r}")
        require(bool(self.path), "path", "must name a file")
        require(self.limit >= 0, "limit", "must be >= 0")


def load_text_benchmark(spec: TextBenchmark) -> list[str]:
    path = Path(spec.path)
    if not path.exists():
        raise DataError(f"{path} not found (evaluate.text_files)")
    docs = TEXT_SPLITS[spec.split](read_utf8(path))  # names the line of a non-UTF-8 byte
    if not docs:
        raise DataError(f"{path}: no text")
    return docs[: spec.limit] if spec.limit else docs


def text_suite(names: Any, files: dict[str, TextBenchmark]) -> dict[str, list[str]]:
    """Every plain-text corpus by name: built-in ones, then file ones."""
    loaded = {name: TEXTS[name]() for name in names}
    loaded.update({name: load_text_benchmark(spec) for name, spec in files.items()})
    return loaded


# Open-ended prompts shown before and after tuning in the report (the deck's example first).
GENERAL_PROMPTS = [
    "Charlie the cat roamed the garden at night. What is the name of the cat?",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "What is 12 plus 7?",
    "Name three colours.",
    "Give me a synonym for happy.",
    "Explain why the sky looks blue.",
    "What should I pack for a day at the beach?",
    "Describe a rainy afternoon in two sentences.",
    "Who wrote Romeo and Juliet?",
    "How do plants make their food?",
    "Suggest a name for a small bakery.",
    "What is the boiling point of water in Celsius?",
    "Translate 'good morning' into French.",
    "List two benefits of regular exercise.",
    "What does a thermometer measure?",
    "Write a short greeting for a birthday card.",
    "Why do we have seasons?",
    "What is the largest planet in our solar system?",
    "Give one tip for learning a new language.",
    "What is the difference between a lake and a river?",
    "Summarise the story of Little Red Riding Hood in one sentence.",
    "How many minutes are in two hours?",
    "What is a noun?",
]
