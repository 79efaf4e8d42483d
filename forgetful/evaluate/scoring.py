"""Scoring a causal LM: log-likelihood of continuations, greedy generation, answer matching.

Multiple-choice follows lm-evaluation-harness (`HFLM._encode_pair`, `multiple_choice`):
the context's trailing spaces move to the continuation; the continuation's tokens are
`encode(context + continuation)[len(encode(context)):]`; `acc` takes the choice with the
highest summed log-probability, `acc_norm` divides it by the choice's length in characters.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import torch

from forgetful.core.config import NonFinite


def progress(items: Any, desc: str) -> Any:
    """A progress bar on stderr, refreshed at most every 5 s so DVC's log stays short."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, mininterval=5, leave=False)


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    ctx = tokenizer(context, add_special_tokens=False).input_ids
    return ctx, whole[len(ctx):]


NON_FINITE = ("non-finite logits (NaN or inf): the model's weights are broken, most often by "
              "a training that diverged; re-train with a lower train_adapter.learning_rate")


def require_finite(values: Any) -> None:
    """Scores computed from NaN or infinite logits would be ranked as if they meant
    something (argmax over NaN): stop instead, with NonFinite."""
    if not all(math.isfinite(v) for v in values):
        raise NonFinite(NON_FINITE)


def require_finite_logits(logits: torch.Tensor) -> None:
    """The same stop for a tensor of logits (a decoding step's)."""
    if not bool(torch.isfinite(logits).all()):
        raise NonFinite(NON_FINITE)


def finite_logits_check() -> Any:
    """A logits processor for `generate` that stops on non-finite logits (and changes
    nothing else)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class FiniteLogits(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            require_finite_logits(scores)
            return scores

    return LogitsProcessorList([FiniteLogits()])


def loglikelihoods(model: Any, tokenizer: Any, pairs: list[tuple[str, str]],
                   batch_size: int) -> list[float]:
    """Summed log P(continuation | context) for each (context, continuation) pair."""
    return token_loglikelihoods(model, tokenizer, [encode_pair(tokenizer, c, x) for c, x in pairs],
                                batch_size)


def token_loglikelihoods(model: Any, tokenizer: Any, encoded: list[tuple[list[int], list[int]]],
                         batch_size: int) -> list[float]:
    """Summed log P(continuation | context) for each pair of token lists."""
    # Longest first: similar lengths share a batch, so little compute goes to padding.
    order = sorted(range(len(encoded)), key=lambda i: -sum(map(len, encoded[i])))
    scores = [0.0] * len(encoded)
    device = next(model.parameters()).device
    for start in progress(range(0, len(order), batch_size), "log-likelihood batches"):
        idx = order[start : start + batch_size]
        seqs = [(encoded[i][0] + encoded[i][1])[:-1] for i in idx]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            # Prompt-tuning models return logits for their virtual tokens first; drop them.
            logprobs = torch.log_softmax(logits[:, -width:].float(), dim=-1).cpu()
        for row, i in enumerate(idx):
            ctx, cont = encoded[i]
            end = len(ctx) + len(cont) - 1
            positions = torch.arange(end - len(cont), end)
            scores[i] = float(logprobs[row, positions, torch.tensor(cont)].sum())
    require_finite(scores)
    return scores


def multiple_choice(model: Any, tokenizer: Any, items: list[dict],
                    batch_size: int) -> list[dict[str, int]]:
    """Per item: correct under acc and acc_norm. Items have context, choices, answer.
    Each question's choices are scored in one packed row (forgetful/packing.py)
    unless the model's output layer does not see the input one to one (prompt learning)."""
    from forgetful.evaluate.heads import selectable

    if selectable(model):
        from forgetful.evaluate.packing import shared_loglikelihoods

        prefix = prefix_token(tokenizer)
        groups = []
        for it in items:
            pairs = [encode_pair(tokenizer, it["context"], " " + c) for c in it["choices"]]
            groups.append([(ctx or [prefix], cont) for ctx, cont in pairs])  # as lm-eval
        per_item = shared_loglikelihoods(
            model, groups, batch_size, tokenizer.pad_token_id,
            lambda batches: progress(batches, "multiple-choice batches"))
    else:
        pairs = [(it["context"], " " + choice) for it in items for choice in it["choices"]]
        flat = loglikelihoods(model, tokenizer, pairs, batch_size)
        per_item, pos = [], 0
        for it in items:
            per_item.append(flat[pos : pos + len(it["choices"])])
            pos += len(it["choices"])
    require_finite(ll for lls in per_item for ll in lls)
    results = []
    for it, lls in zip(items, per_item, strict=True):
        normed = [ll / len(choice) for ll, choice in zip(lls, it["choices"], strict=True)]
        results.append({
            "acc": int(max(range(len(lls)), key=lls.__getitem__) == it["answer"]),
            "acc_norm": int(max(range(len(normed)), key=normed.__getitem__) == it["answer"]),
        })
    return results


def label_choice(model: Any, tokenizer: Any, items: list[dict], batch_size: int) -> list[int]:
    """Classification by the likelihood of label words: per item (prompt, labels), the
    index of the likeliest label as the prompt's continuation."""
    return [max(range(len(lls)), key=lls.__getitem__)
            for lls in label_logliks(model, tokenizer, items, batch_size)]


def label_logliks(model: Any, tokenizer: Any, items: list[dict], batch_size: int
                  ) -> list[list[float]]:
    """Per item (prompt, labels), each label's summed log-likelihood as the prompt's
    continuation. Prompt and label are tokenized apart, as training tokenized them (no
    space moved across). A prompt and its labels share one packed row
    (forgetful/evaluate/packing.py) where the model allows it."""
    from forgetful.evaluate.heads import selectable

    groups = [[encode_apart(tokenizer, it["prompt"], label) for label in it["labels"]]
              for it in items]
    if selectable(model):
        from forgetful.evaluate.packing import shared_loglikelihoods

        per_item = shared_loglikelihoods(
            model, groups, batch_size, tokenizer.pad_token_id,
            lambda batches: progress(batches, "label-likelihood batches"))
    else:
        flat = token_loglikelihoods(model, tokenizer, [p for g in groups for p in g],
                                    batch_size)
        per_item, pos = [], 0
        for g in groups:
            per_item.append(flat[pos : pos + len(g)])
            pos += len(g)
    require_finite(ll for lls in per_item for ll in lls)
    return [list(lls) for lls in per_item]


def rolling_windows(tokens: list[int], prefix: int, width: int
                    ) -> list[tuple[list[int], list[int]]]:
    """(input, predicted) windows covering every token once, as lm-eval's
    `get_rolling_token_windows(context_len=1)` + `make_disjoint_window` build them: the first
    token is predicted from `prefix` (a BOS or EOS token), each later window from the tokens
    before it, up to `width` tokens of input."""
    windows, done = [], 0
    stream = [prefix, *tokens]
    while done < len(tokens):
        end = min(done + width, len(tokens))
        start = max(end - width, 0)
        windows.append((stream[start:end], tokens[done:end]))
        done = end
    return windows


def text_loglikelihoods(model: Any, tokenizer: Any, texts: list[str], width: int,
                        batch_size: int) -> list[tuple[float, int]]:
    """Per text: (summed log-probability of all its tokens, token count), by rolling
    windows of at most `width` tokens (lm-eval's `loglikelihood_rolling`). Each window is
    scored as a (context, continuation) pair whose model input, (context + continuation)
    minus its last token, is exactly the window's input (lm-eval's make_disjoint_window)."""
    pairs, owner = [], []
    for n, text in enumerate(texts):
        for inp, pred in rolling_windows(tokenizer(text, add_special_tokens=False).input_ids,
                                         prefix_token(tokenizer), width):
            pairs.append((inp[: len(inp) - len(pred) + 1], pred))
            owner.append(n)
    sums = [0.0] * len(texts)
    counts = [0] * len(texts)
    for n, (_, pred), ll in zip(owner, pairs, token_loglikelihoods(
            model, tokenizer, pairs, batch_size), strict=True):
        sums[n] += ll
        counts[n] += len(pred)
    return list(zip(sums, counts, strict=True))


def prefix_token(tokenizer: Any) -> int:
    """What precedes a text with no context: lm-eval's HFLM.prefix_token_id, the BOS token
    if the tokenizer has one, else EOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None \
        else tokenizer.eos_token_id


def encode_apart(tokenizer: Any, context: str, continuation: str
                 ) -> tuple[list[int], list[int]]:
    """Context and continuation tokenized separately, as training tokenizes a prompt and
    its answer (no space moved across the boundary, unlike encode_pair)."""
    return (tokenizer(context, add_special_tokens=False).input_ids,
            tokenizer(continuation, add_special_tokens=False).input_ids)


def load_for_eval(model_dir: Any) -> tuple[Any, Any]:
    """(model, tokenizer) from a model folder, or from an adapter folder that could not be
    merged (its run_info.json names the base), in float32 for scoring, on the GPU if
    there is one."""
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetful.core.artifacts import require_safetensors

    model_dir = Path(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        base_path = json.loads((model_dir / "run_info.json").read_text())["base_path"]
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32,
                                                    use_safetensors=True)
        adapter = PeftModel.from_pretrained(base, require_safetensors(model_dir))
        return adapter.to(device).eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 use_safetensors=True)
    return model.to(device).eval(), tokenizer


def shared_length(seqs: list[list[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one of its own."""
    if not seqs or not all(seqs):
        return 0
    n = 0
    while n < min(map(len, seqs)) - 1 and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def prefix_padded_batches(model: Any, tokenizer: Any, prompts: list[str], batch_size: int
                          ) -> Iterator[tuple[list[int], int, dict[str, torch.Tensor]]]:
    """The prompts in batches on the model's device, longest first (little padding): (their
    indices in `prompts`, how many leading tokens all of the batch's prompts share, the
    batch). A row is the shared tokens, then padding, then the rest of its prompt, so the
    shared part can be run once (a chat template's system prompt is about half of a short
    prompt); with position ids counted from the attention mask every row sees the
    positions it would alone. With nothing shared this is left padding."""
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in progress(range(0, len(order), batch_size), "generation batches"):
        idx = order[start : start + batch_size]
        seqs = [encoded[i] for i in idx]
        shared, width = shared_length(seqs), max(map(len, seqs))
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(seqs):
            own = width - (len(seq) - shared)  # where the row's own tokens start
            ids[row, :shared] = torch.tensor(seq[:shared], dtype=torch.long)
            ids[row, own:] = torch.tensor(seq[shared:], dtype=torch.long)
            mask[row, :shared] = mask[row, own:] = 1
        yield idx, shared, {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def cache_name(model: Any) -> str:
    """The keyword of the model's KV cache, in and out (transformers 5.24 renamed
    `past_key_values` to `cache`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else \
        "past_key_values"


def shared_cache(model: Any, batch: dict[str, torch.Tensor], shared: int) -> Any:
    """The keys and values of the batch's shared leading tokens, run once and copied to
    every row; None where the cache is not one a prompt can continue from that way (a
    sliding-window, static or recurrent layer)."""
    from transformers.cache_utils import DynamicLayer

    name = cache_name(model)
    out = model(input_ids=batch["input_ids"][:1, :shared], use_cache=True)
    cache = getattr(out, name, None)
    if cache is None or not all(type(layer) is DynamicLayer
                                for layer in getattr(cache, "layers", [None])):
        return None
    cache.batch_repeat_interleave(batch["input_ids"].shape[0])
    return cache


def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy completions, cut at the end-of-sequence token. The tokens a batch's prompts
    all begin with are run once (prefix_padded_batches, shared_cache): on the default
    evaluation's 220 task prompts 22 s instead of 36 s (tuned) and 32 s instead of 44 s
    (base) on one thread, the same 220 answers."""
    outputs, name = [""] * len(prompts), cache_name(model)
    for idx, shared, batch in prefix_padded_batches(model, tokenizer, prompts, batch_size):
        with torch.no_grad():
            cache = shared_cache(model, batch, shared) if shared else None
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id,
                                 logits_processor=finite_logits_check(),
                                 **({name: cache} if cache is not None else {}))
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
        for i, text in zip(idx, texts, strict=True):
            outputs[i] = text.strip()
    return outputs


def generate_prompt_learning(model: Any, tokenizer: Any, prompts: list[str],
                             max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions for unmerged prompt-learning adapters (prompt, p- and prefix
    tuning), batched with a KV cache, without PEFT's `generate`.

    With transformers 5.24 and peft 0.21, `generate` on these models diverges from the
    model's own forward pass after the first tokens (the prefix cache is dropped or
    misplaced; tests/test_methods.py shows it). Here the trained inputs go in once, as
    PEFT's forward puts them (virtual-token embeddings before the prompt, or key/value
    prefixes in the cache), and then one token a step through the base model and the
    cache. Prompts are padded as prefix_padded_batches lays them out (here the whole row
    is run: the trained inputs come before the shared tokens); each row's position ids
    count only its own tokens, so it sees the positions it would alone (the test decodes
    the same tokens as full forward passes, one prompt at a time)."""
    from peft import PeftType

    config = model.active_peft_config
    virtual = config.num_virtual_tokens
    prefix = config.peft_type == PeftType.PREFIX_TUNING
    base = model.get_base_model()
    name = cache_name(model)
    device = next(model.parameters()).device
    outputs = [""] * len(prompts)
    for idx, _, batch in prefix_padded_batches(model, tokenizer, prompts, batch_size):
        ids, rows = batch["input_ids"], len(idx)
        mask = torch.cat([torch.ones(rows, virtual, dtype=batch["attention_mask"].dtype,
                                     device=device), batch["attention_mask"]], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            if prefix:  # the prefixes are the cache's first `virtual` positions
                cache = model.get_prompt(rows, max_cache_len=mask.shape[1] + max_new_tokens)
                out = base(input_ids=ids, attention_mask=mask, position_ids=positions[:, virtual:],
                           use_cache=True, logits_to_keep=1, **{name: cache})
            else:  # the virtual tokens' embeddings before the prompt's
                embeds = model.word_embeddings(ids)
                embeds = torch.cat([model.get_prompt(batch_size=rows).to(embeds.dtype), embeds],
                                   dim=1)
                out = base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           use_cache=True, logits_to_keep=1)
            last = positions[:, -1:]
            tokens, finished = [], torch.zeros(rows, dtype=torch.bool, device=device)
            for step in range(max_new_tokens):
                require_finite_logits(out.logits[:, -1])
                token = out.logits[:, -1].argmax(-1)
                tokens.append(token)
                finished |= token == tokenizer.eos_token_id
                if bool(finished.all()) or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                last = last + 1
                out = base(input_ids=token[:, None], attention_mask=mask, position_ids=last,
                           use_cache=True, logits_to_keep=1, **{name: getattr(out, name)})
        for row, i in enumerate(idx):
            made = [int(t[row]) for t in tokens]
            if tokenizer.eos_token_id in made:  # cut at the end of sequence
                made = made[: made.index(tokenizer.eos_token_id)]
            outputs[i] = tokenizer.decode(made, skip_special_tokens=True).strip()
    return outputs
