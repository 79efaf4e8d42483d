"""Prompt templates, by name: how a conversation becomes text, and which parts are trained.

`render` returns segments `(text, assistant, trained)`. Non-assistant segments are the
prompt (system and user turns and the template's framing); assistant segments are the
answers, each followed at tokenization by the tokenizer's end-of-sequence token, which for
chat models is the end-of-turn token (`<|im_end|>` for SmolLM2). Segments are tokenized
apart, so the boundary between prompt and answer is exactly where generation starts at
evaluation.

- `chat`: the tokenizer's own chat template; multi-turn.
- `chatml`: the ChatML template (`<|im_start|>role ... <|im_end|>`), for tokenizers
  without a chat template of their own.
- `plain`, `alpaca`: fixed single-turn frames with an `{instruction}` slot.
"""

from __future__ import annotations

import hashlib
from typing import Any

from forgetful.core.config import ConfigError, DataError

SINGLE_TURN = {
    # The shortest useful frame: cheap on CPU, and unambiguous about where the answer starts.
    "plain": "{instruction}\nAnswer: ",
    # Stanford Alpaca's no-input prompt (Taori et al. 2023).
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    ),
}
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = (*SINGLE_TURN, "chatml", "chat")
TRAIN_TURNS = ("all", "last")  # which assistant turns of a multi-turn chat carry labels


def template_source(name: str, tokenizer: Any) -> str:
    """The template text itself (hashed into run_info)."""
    if name == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "format_data.template is 'chat' but the base model's tokenizer has no chat "
                f"template; choose one of {', '.join(t for t in TEMPLATES if t != 'chat')}"
            )
        return tokenizer.chat_template
    if name == "chatml":
        return CHATML
    if name not in SINGLE_TURN:
        raise ConfigError(f"unknown template '{name}'; choose one of {', '.join(TEMPLATES)}")
    return SINGLE_TURN[name]


def template_hash(name: str, tokenizer: Any) -> str:
    return hashlib.sha256(template_source(name, tokenizer).encode()).hexdigest()[:16]


def _apply(name: str, tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt,
        chat_template=template_source(name, tokenizer),
    )


def _render_chat(name: str, messages: list[dict], tokenizer: Any,
                 train_turns: str) -> list[tuple[str, bool, bool]]:
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = set(assistant if train_turns == "all" else assistant[-1:])
    segments: list[tuple[str, bool, bool]] = []
    consumed = ""
    for i in assistant:
        prefix = _apply(name, tokenizer, messages[:i], generation_prompt=True)
        if not prefix.startswith(consumed):
            raise DataError(f"template '{name}' renders a conversation's earlier turns "
                            "differently once later turns are added; use template chatml")
        content = messages[i]["content"]
        segments += [(prefix[len(consumed):], False, False), (content, True, i in trained)]
        consumed = prefix + content + tokenizer.eos_token
    full = _apply(name, tokenizer, messages, generation_prompt=False)
    if not full.startswith(consumed):
        raise DataError(f"template '{name}' does not end assistant turns with the tokenizer's "
                        f"end-of-sequence token {tokenizer.eos_token!r}; labels would not match "
                        "what the model generates. Use a template that does (chat or plain)")
    return segments


def render(name: str, messages: list[dict], tokenizer: Any,
           train_turns: str = "all") -> list[tuple[str, bool, bool]]:
    """Segments (text, is_assistant, trained) of one conversation under template `name`."""
    if name in SINGLE_TURN:
        roles = [m["role"] for m in messages]
        if roles != ["user", "assistant"]:
            raise DataError(f"template '{name}' is single-turn (one user and one assistant "
                            f"message), got roles {roles}; use template chat or chatml")
        prompt = SINGLE_TURN[name].format(instruction=messages[0]["content"])
        return [(prompt, False, False), (messages[1]["content"], True, True)]
    return _render_chat(name, messages, tokenizer, train_turns)


def prompt_of(name: str, instruction: str, tokenizer: Any) -> str:
    """The prompt for a single user instruction, ending where the model's answer starts."""
    if name in SINGLE_TURN:
        return SINGLE_TURN[name].format(instruction=instruction)
    return _apply(name, tokenizer, [{"role": "user", "content": instruction}], True)
