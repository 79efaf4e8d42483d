"""Score one multiple-choice benchmark file with our evaluator and with lm-evaluation-harness.

Both tools get the same model object and the same items; the script prints acc and
acc_norm from each, how many items they disagree on, and the wall time of each.

Run:    python benchmarks/lm_eval_agreement.py --model models/base --format piqa \
            --path ../shared/data/piqa/valid.jsonl --labels ../shared/data/piqa/valid-labels.lst
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from forgetful.evaluate.benchmarks import FileBenchmark, load_file_benchmark
from forgetful.evaluate.scoring import multiple_choice

TASK = """task: agreement_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--format", default="mc_jsonl")
    parser.add_argument("--path", required=True)
    parser.add_argument("--labels", default="")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    a = parser.parse_args()

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    items = load_file_benchmark(FileBenchmark(a.format, a.path, a.labels, a.limit))
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    started = time.perf_counter()
    ours = multiple_choice(model, tokenizer, items, a.batch_size)
    ours_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "items.jsonl"
        # The rendered context goes to lm-eval as is, so both tools see identical text.
        data.write_text("".join(json.dumps(it) + "\n" for it in items))
        (Path(tmp) / "agreement_mc.yaml").write_text(TASK.format(data=data))
        started = time.perf_counter()
        result = lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=a.batch_size),
            tasks=["agreement_mc"], task_manager=TaskManager(include_path=tmp), log_samples=True)
        theirs_s = time.perf_counter() - started
    theirs = sorted(result["samples"]["agreement_mc"], key=lambda s: s["doc_id"])
    n = len(items)
    disagree = sum((s["acc"], s["acc_norm"]) != (o["acc"], o["acc_norm"])
                   for s, o in zip(theirs, ours, strict=True))
    print(f"items: {n}")
    print(f"ours:   acc {sum(o['acc'] for o in ours) / n:.4f}  "
          f"acc_norm {sum(o['acc_norm'] for o in ours) / n:.4f}  ({ours_s:.1f} s)")
    r = result["results"]["agreement_mc"]
    print(f"lm-eval: acc {r['acc,none']:.4f}  acc_norm {r['acc_norm,none']:.4f}  "
          f"({theirs_s:.1f} s)")
    print(f"items scored differently: {disagree}")


if __name__ == "__main__":
    main()
