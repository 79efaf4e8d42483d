"""How a task's generated answers are judged: the answer metrics, one registry.

A task names its metric in params (format_data.tasks.<task>.metric), so the registry sits
with the tasks; forgetful.evaluate applies it to the model's greedy answers. Metrics in
LIKELIHOOD_METRICS are not string matches: evaluate scores those tasks by the likelihood of
each label word instead of generating.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable


def normalize(text: str) -> str:
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> bool:
    """The first line of the answer, case and punctuation aside, is exactly the target."""
    return normalize(prediction) == normalize(answer)


def contains(prediction: str, answer: str) -> bool:
    """The target appears as whole words in the first line ("The cat is Charlie.")."""
    return f" {normalize(answer)} " in f" {normalize(prediction)} "


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def first_number(text: str) -> str | None:
    found = NUMBER.search(text)
    return found.group().replace(",", "") if found else None


def numeric(prediction: str, answer: str) -> bool:
    """The first number in the prediction equals the target number."""
    got, want = first_number(prediction), first_number(answer)
    return got is not None and want is not None and float(got) == float(want)


FINAL = re.compile(r"####\s*(-?[\d,]+(?:\.\d+)?)")


def final_number_of(text: str) -> str | None:
    """GSM8K's convention: the number after '####', else the last number in the text."""
    found = FINAL.search(text)
    if found:
        return found.group(1).replace(",", "")
    numbers = NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def final_number(prediction: str, answer: str) -> bool:
    """The prediction's final number (after '####' if present) equals the target's."""
    got, want = final_number_of(prediction), final_number_of(answer)
    return got is not None and want is not None and float(got) == float(want)


# Task metrics scored by likelihood instead of generation (see label_choice): the likeliest
# label word, or for a preference pair whether the chosen answer is likelier than the
# rejected one (preference accuracy).
LIKELIHOOD_METRICS = ("label_likelihood", "preference")

METRICS: dict[str, Callable[[str, str], bool]] = {
    "exact_match": exact_match,
    "contains": contains,
    "numeric": numeric,
    "final_number": final_number,
}
