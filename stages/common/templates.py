"""Prompt templates, by name: how an instruction becomes the text the model is prompted with.

`chat` uses the tokenizer's own chat template (a user turn plus the generation prompt);
the others are fixed strings with an `{instruction}` slot. The completion is always the
bare answer followed by the tokenizer's end-of-sequence token, added at tokenization.
"""

from __future__ import annotations

import hashlib
from typing import Any

from stages.common.config import ConfigError

NAMED = {
    # The shortest useful frame: cheap on CPU, and unambiguous about where the answer starts.
    "plain": "{instruction}\nAnswer: ",
    # Stanford Alpaca's no-input prompt (Taori et al. 2023).
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    ),
}
TEMPLATES = (*NAMED, "chat")


def template_source(name: str, tokenizer: Any) -> str:
    """The template text itself (for hashing into run_info)."""
    if name == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "format_data.template is 'chat' but the base model's tokenizer has no chat "
                f"template; choose one of {', '.join(NAMED)}"
            )
        return tokenizer.chat_template
    if name not in NAMED:
        raise ConfigError(f"unknown template '{name}'; choose one of {', '.join(TEMPLATES)}")
    return NAMED[name]


def template_hash(name: str, tokenizer: Any) -> str:
    return hashlib.sha256(template_source(name, tokenizer).encode()).hexdigest()[:16]


def render(name: str, instruction: str, tokenizer: Any) -> str:
    """The prompt text for one instruction under template `name`."""
    source = template_source(name, tokenizer)
    if name == "chat":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    return source.format(instruction=instruction)
