"""The built-in general-ability suite: things a base model knows that fine-tuning never trains.

Each benchmark is a list of multiple-choice items (context, choices, answer index) in
lm-evaluation-harness's plain "Question: ...\\nAnswer:" form, scored by log-likelihood.
Distractors are the other items' answers, chosen with a fixed seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

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
