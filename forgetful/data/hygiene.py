"""Data hygiene: duplicate removal within a task, and contamination of training by test data.

- Exact duplicates: the same conversation after lower-casing and collapsing punctuation and
  whitespace.
- Near duplicates: word n-gram Jaccard similarity above a threshold, found with MinHash
  LSH (datasketch) and confirmed with the exact Jaccard, so the check stays linear in size.
- Contamination: an evaluation item is contaminated when at least `item_threshold` of its
  word n-grams occur in the training data (the 13-gram overlap test of GPT-3's and
  lm-evaluation-harness's decontamination, with a fraction instead of any overlap, since
  templated prompts share their frame). An item shorter than n words is contaminated when
  its whole word sequence occurs in a training text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def conversation_text(messages: list[dict]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def deduplicate(conversations: list[list[dict]], n: int,
                threshold: float) -> tuple[list[list[dict]], int, int]:
    """Keep the first of each exact or near-duplicate group; return kept, #exact, #near."""
    from datasketch import MinHash, MinHashLSH

    kept: list[list[dict]] = []
    seen: set[str] = set()
    lsh = MinHashLSH(threshold=threshold, num_perm=64) if threshold < 1 else None
    shingles: dict[str, set] = {}
    exact = near = 0
    for conv in conversations:
        tokens = words(conversation_text(conv))
        key = " ".join(tokens)
        if key in seen:
            exact += 1
            continue
        seen.add(key)
        if lsh is not None:
            grams = ngrams(tokens, n)
            sig = MinHash(num_perm=64, seed=1)
            sig.update_batch([" ".join(g).encode() for g in grams])
            candidates = lsh.query(sig)
            if any(_jaccard(grams, shingles[c]) >= threshold for c in candidates):
                near += 1
                continue
            name = str(len(kept))
            lsh.insert(name, sig)
            shingles[name] = grams
        kept.append(conv)
    return kept, exact, near


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def contamination(train_texts: Iterable[str], eval_sets: dict[str, list[str]], n: int,
                  item_threshold: float, min_words: int = 4) -> dict[str, Any]:
    """Per evaluation set: how many items overlap the training texts, and examples with
    the text that matched. An item is its question with its gold answer. One of n words or
    more is flagged when `item_threshold` of its n-grams occur in training; a shorter one
    when the whole of it (question and answer together) occurs in one training text and
    it has at least `min_words` words: a short question alone, or one common word ("fire"),
    is not evidence that the item was seen."""
    train_grams: set[tuple[str, ...]] = set()
    joined = []
    for text in train_texts:
        tokens = words(text)
        train_grams |= ngrams(tokens, n)
        joined.append(" ".join(tokens))
    haystack = f" {' | '.join(joined)} "  # "|" is no word: no match spans two texts
    report = {}
    for name, items in eval_sets.items():
        flagged = []
        for text in items:
            tokens = words(text)
            if not tokens:
                continue
            if len(tokens) < n:
                phrase = " ".join(tokens)
                hit = len(tokens) >= min_words and f" {phrase} " in haystack
                matched = phrase
            else:
                shared = ngrams(tokens, n) & train_grams
                hit = len(shared) / len(ngrams(tokens, n)) >= item_threshold
                matched = " ".join(min(shared)) if shared else ""
            if hit:
                flagged.append(f"{text[:160]} (matched: '{matched[:100]}')")
        report[name] = {"items": len(items), "contaminated": len(flagged),
                        "share": round(len(flagged) / max(len(items), 1), 4),
                        "examples": flagged[:3]}
    return report
