"""Record formats, by name: how one row of a user's data becomes a conversation.

A conversation is a list of messages `{"role": "system"|"user"|"assistant", "content"}`
ending with an assistant turn. Every format maps its columns (renamable through the
task's `columns:` block) to one; templates then render it (forgetful/templates.py).

- `prompt_completion`: prompt (+ optional input and system columns) -> completion.
- `alpaca`: Stanford Alpaca's instruction, input, output.
- `messages`: a column holding OpenAI-style chat messages (multi-turn).
- `classification`: a text column and a label column; labels are mapped to label words.
- `preference`: a prompt, a chosen and a rejected answer (DPO): plain text columns, or
  chat-style message lists (the whole conversation in `chosen` and `rejected`, as in
  Anthropic's HH-RLHF, or a `prompt` of messages and one-message answers, as in TRL's
  conversational layout). The conversation ends with the chosen answer, which carries the
  rejected one beside it (`rejected`); supervised training reads the chosen answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forgetful.core.config import DataError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PromptCompletionColumns:
    prompt: str = "prompt"
    completion: str = "completion"
    input: str = ""  # optional column appended to the prompt on a new line
    system: str = ""  # optional column holding a system message


@dataclass(frozen=True)
class AlpacaColumns:
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"


@dataclass(frozen=True)
class MessagesColumns:
    messages: str = "messages"


@dataclass(frozen=True)
class ClassificationColumns:
    text: str = "text"
    label: str = "label"
    input: str = ""  # optional second text column (e.g. a title next to a body)


@dataclass(frozen=True)
class PreferenceColumns:
    prompt: str = "prompt"  # leave empty when chosen and rejected hold whole conversations
    chosen: str = "chosen"
    rejected: str = "rejected"
    system: str = ""  # optional column holding a system message


def cell(row: dict, column: str, where: str, required: bool = True) -> str:
    value = row.get(column)
    empty = value is None or (isinstance(value, float) and math.isnan(value)) or value == ""
    if empty:
        if required:
            raise DataError(f"{where}: column '{column}' is empty; fill it, or set "
                            "invalid_records: skip on this task (or format_data."
                            "invalid_records: skip for every task) to leave such records "
                            "out; they are counted, up to format_data.max_skipped_share")
        return ""
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: column '{column}' holds a {type(value).__name__}, expected text")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # labels read from parquet as 1.0
    return str(value).strip()


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs if content]


def _prompt_completion(row: dict, c: PromptCompletionColumns, where: str, spec: Any) -> list:
    user = cell(row, c.prompt, where)
    if c.input and cell(row, c.input, where, required=False):
        user = f"{user}\n{cell(row, c.input, where)}"
    system = cell(row, c.system, where, required=False) if c.system else ""
    return _turns(("system", system), ("user", user), ("assistant", cell(row, c.completion, where)))


def _alpaca(row: dict, c: AlpacaColumns, where: str, spec: Any) -> list:
    user = cell(row, c.instruction, where)
    extra = cell(row, c.input, where, required=False)
    return _turns(("user", f"{user}\n{extra}" if extra else user),
                  ("assistant", cell(row, c.output, where)))


def _message_list(value: Any, where: str, empty: str, item: str) -> list[dict[str, str]]:
    """A column's chat messages, each checked and stripped; `empty` the error when it holds
    no list (or an empty one), `item` what names a message in its error ("message" or
    "column 'chosen', message")."""
    if hasattr(value, "tolist"):  # parquet gives numpy arrays
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {empty}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(
            m.get("content"), str
        ):
            raise DataError(f"{where}: {item} {i} must be {{'role': one of {', '.join(ROLES)}, "
                            f"'content': text}}, got {m!r}"[:300])
        out.append({"role": m["role"], "content": m["content"].strip()})
    return out


def _messages(row: dict, c: MessagesColumns, where: str, spec: Any) -> list:
    out = _message_list(row.get(c.messages), where,
                        f"column '{c.messages}' must be a non-empty list of messages", "message")
    if out[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's (the answer to "
                        f"train on), got '{out[-1]['role']}'")
    return out


def _classification(row: dict, c: ClassificationColumns, where: str, spec: Any) -> list:
    raw = cell(row, c.label, where)
    if spec.labels and raw not in spec.labels:
        raise DataError(f"{where}: label {raw!r} is not in the task's labels: map "
                        f"({', '.join(spec.labels)}); add it or fix the record")
    word = spec.labels.get(raw, raw)
    text = cell(row, c.text, where)
    if c.input and cell(row, c.input, where, required=False):
        text = f"{cell(row, c.input, where)}\n{text}"
    words = ", ".join(dict.fromkeys(spec.labels.values())) if spec.labels else ""
    instruction = spec.instruction or (f"Classify this text. Answer with one of: {words}."
                                       if words else "Classify this text.")
    return _turns(("user", f"{instruction}\n{text}"), ("assistant", word))


def _chat_column(value: Any, column: str, where: str) -> list[dict[str, str]]:
    """A preference column holding chat messages (it could have held text)."""
    return _message_list(value, where, f"column '{column}' must be text or a non-empty list "
                         "of messages", f"column '{column}', message")


def _answer(value: Any, column: str, where: str) -> tuple[list[dict[str, str]], str]:
    """An answer column: (the messages before the answer, the answer's text)."""
    if isinstance(value, str) or value is None or (isinstance(value, float)
                                                    and math.isnan(value)):
        return [], cell({column: value}, column, where)
    messages = _chat_column(value, column, where)
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: column '{column}' must end with the assistant's answer, "
                        f"got '{messages[-1]['role']}'")
    if not messages[-1]["content"]:
        cell({column: ""}, column, where)  # the empty-answer error
    return messages[:-1], messages[-1]["content"]


def _preference(row: dict, c: PreferenceColumns, where: str, spec: Any) -> list:
    if c.rejected not in row or row.get(c.rejected) is None:
        raise DataError(f"{where}: column '{c.rejected}' (the rejected answer) is missing; "
                        "preference records need a chosen and a rejected answer (or set "
                        "invalid_records: skip on this task to leave such records out)")
    before, chosen = _answer(row.get(c.chosen), c.chosen, where)
    before_r, rejected = _answer(row.get(c.rejected), c.rejected, where)
    if before_r and before_r != before:
        raise DataError(f"{where}: columns '{c.chosen}' and '{c.rejected}' hold different "
                        "conversations before their answers; a pair must answer the same "
                        "prompt")
    prompt = row.get(c.prompt) if c.prompt else None
    if prompt is not None and not isinstance(prompt, str) and hasattr(prompt, "__len__"):
        before = _chat_column(prompt, c.prompt, where) + before
    elif c.prompt and not before:
        before = [{"role": "user", "content": cell(row, c.prompt, where)}]
    if not before or before[-1]["role"] != "user":
        raise DataError(f"{where}: no user prompt before the answers; name the prompt column "
                        f"(columns: prompt: <column>) or give chat-style answers whose "
                        "messages end with a user turn before the answer")
    if chosen == rejected:
        raise DataError(f"{where}: the chosen and the rejected answer are the same text; a "
                        "pair must differ (fix the record, or set invalid_records: skip)")
    system = cell(row, c.system, where, required=False) if c.system else ""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *before, {"role": "assistant", "content": chosen, "rejected": rejected}]


@dataclass(frozen=True)
class Format:
    columns: type
    to_conversation: Callable[[dict, Any, str, Any], list[dict[str, str]]]


FORMATS: dict[str, Format] = {
    "prompt_completion": Format(PromptCompletionColumns, _prompt_completion),
    "alpaca": Format(AlpacaColumns, _alpaca),
    "messages": Format(MessagesColumns, _messages),
    "classification": Format(ClassificationColumns, _classification),
    "preference": Format(PreferenceColumns, _preference),
}


def required_columns(columns: Any) -> list[str]:
    """Columns that must exist in the data (optional ones are those left empty)."""
    return [v for v in vars(columns).values() if v]
