"""benchmarks/speed.py's pure parts: the FLOPs count behind "fraction of the matmul rate",
the medians and ranges, and the README block it rewrites."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from forgetful.report.readme import write_between

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(speed)

SHAPE = {"layers": 2, "hidden": 8, "vocab": 100, "body_matmul_params": 1000,
         "head_params": 800}


def test_flops_count_what_each_trainer_runs() -> None:
    # 2 rows x 5 positions, 3 of them supervised, 10 trainable LoRA weights
    body = 2 * 1000 * 10
    attention = 2 * 2 * 4 * 5 * 5 * 8
    lora = 2 * 10 * 10
    selective = speed.flops_per_batch(SHAPE, 3, 2, 5, "supervised", False, 10)
    head = 2 * 800 * 3
    # LoRA: forward, then input and weight gradients (2x its forward)
    assert selective == (body + attention + head + lora) + 2 * (body + attention + head + lora)
    everywhere = speed.flops_per_batch(SHAPE, 3, 2, 5, "all", False, 10)
    assert everywhere - selective == 3 * 2 * 800 * (10 - 3)  # forward + input gradient
    # gradient checkpointing runs the body's forward once more, the output layer not
    recomputed = speed.flops_per_batch(SHAPE, 3, 2, 5, "supervised", True, 10)
    assert recomputed - selective == body + attention


def test_spread_is_median_and_range() -> None:
    assert speed.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0,
                                             "runs": [3.0, 1.0, 2.0]}


def test_readme_block_is_replaced_and_nothing_else(tmp_path: Path) -> None:
    start, end = speed.README_BLOCK
    page = tmp_path / "README.md"
    page.write_text(f"intro\n{start}\nold table\n{end}\nafter\n")
    assert write_between(page, start, end, "new table\n")
    assert page.read_text() == f"intro\n{start}\nnew table\n{end}\nafter\n"


def test_readme_without_the_block_is_left_alone(tmp_path: Path) -> None:
    start, end = speed.README_BLOCK
    page = tmp_path / "README.md"
    for text in ("no markers at all\n", f"{end} before {start}\n", f"only {start}\n"):
        page.write_text(text)
        assert not write_between(page, start, end, "new\n")
        assert page.read_text() == text


def test_the_readme_has_every_generated_block() -> None:
    from forgetful.study import draw
    from stages import run_seeds

    page = (ROOT / "README.md").read_text()
    for start, end in (speed.README_BLOCK, draw.README_BLOCK, run_seeds.README_BLOCK):
        assert start in page and end in page.split(start, 1)[1], start


def test_eval_flops_count_the_passes_and_the_head_positions_that_ran(tiny_model: Path
                                                                      ) -> None:
    """ForwardCounter sees every body pass's padded shape and only the positions the
    output layer ran at: all of them in a plain forward, the choice tokens' predecessors
    in our packed multiple-choice scoring."""
    import torch

    from forgetful.evaluate.scoring import encode_pair, load_for_eval, multiple_choice

    model, tokenizer = load_for_eval(tiny_model)
    counter = speed.ForwardCounter(model)
    with torch.no_grad():
        model(input_ids=torch.ones((3, 7), dtype=torch.long))
    assert counter.counts() == {"passes": [[3, 7]], "head_positions": 21}
    items = [{"context": "The sky is", "choices": ["blue today", "green"], "answer": 0},
             {"context": "Two and two make", "choices": ["four", "five apples"], "answer": 0}]
    counter = speed.ForwardCounter(model)
    multiple_choice(model, tokenizer, items, 16)
    counted = counter.counts()
    # one per distinct prefix a continuation token is predicted from (choices that share
    # their first tokens share those positions)
    predicted = 0
    for it in items:
        pairs = [encode_pair(tokenizer, it["context"], " " + c) for c in it["choices"]]
        predicted += len({tuple(ctx + cont[:k]) for ctx, cont in pairs
                          for k in range(len(cont))})
    assert counted["head_positions"] == predicted
    assert len(counted["passes"]) == 1 and counted["passes"][0][0] == 1  # one packed row
    # the FLOPs: body and attention per pass, the head per position it ran at
    rows, length = counted["passes"][0]
    assert speed.eval_flops(SHAPE, counted["passes"], counted["head_positions"]) == (
        2 * 1000 * rows * length + rows * 2 * 4 * length * length * 8
        + 2 * 800 * predicted)
