"""General benchmarks from files, and agreement with lm-evaluation-harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetful.core.config import ConfigError, DataError
from forgetful.evaluate.benchmarks import (
    BENCHMARKS,
    FileBenchmark,
    load_file_benchmark,
    question_of,
)
from forgetful.evaluate.scoring import multiple_choice


def test_mc_jsonl_piqa_and_mmlu_files(tmp_path: Path) -> None:
    (tmp_path / "mc.jsonl").write_text(json.dumps(
        {"question": "Sky colour?", "choices": ["blue", "green"], "answer": 0}) + "\n")
    assert load_file_benchmark(FileBenchmark("mc_jsonl", str(tmp_path / "mc.jsonl"))) == [
        {"context": "Question: Sky colour?\nAnswer:", "choices": ["blue", "green"], "answer": 0}]
    (tmp_path / "piqa.jsonl").write_text(json.dumps(
        {"goal": "Open a jar", "sol1": "Twist the lid", "sol2": "Eat the lid"}) + "\n")
    (tmp_path / "labels.lst").write_text("0\n")
    piqa = load_file_benchmark(FileBenchmark("piqa", str(tmp_path / "piqa.jsonl"),
                                             labels=str(tmp_path / "labels.lst")))
    assert piqa == [{"context": "Question: Open a jar\nAnswer:",
                     "choices": ["Twist the lid", "Eat the lid"], "answer": 0}]
    (tmp_path / "mmlu.csv").write_text("What is 2+2?,3,4,5,6,B\n")
    mmlu = load_file_benchmark(FileBenchmark("mmlu_csv", str(tmp_path / "mmlu.csv")))
    assert mmlu == [{"context": "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:",
                     "choices": ["A", "B", "C", "D"], "answer": 1}]


def test_bad_benchmark_files_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "mc.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n'
                                       '{"question": "q", "choices": ["a"], "answer": 3}\n')
    with pytest.raises(DataError, match=r"mc\.jsonl:2: answer 3 is not an index"):
        load_file_benchmark(FileBenchmark("mc_jsonl", str(tmp_path / "mc.jsonl")))
    (tmp_path / "p.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    (tmp_path / "l.lst").write_text("0\n1\n")
    with pytest.raises(DataError, match=r"1 questions but .*l\.lst has 2 labels"):
        load_file_benchmark(FileBenchmark("piqa", str(tmp_path / "p.jsonl"),
                                          labels=str(tmp_path / "l.lst")))


def write_lm_eval_task(folder: Path, name: str, items: list[dict]) -> Path:
    """The items as a mc_jsonl file plus an lm-eval task YAML over it, in `folder`.
    lm-eval renders the question itself, from its own task definition."""
    folder.mkdir()
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"question": question_of(it), "choices": it["choices"],
                                        "answer": it["answer"]}) + "\n" for it in items))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return data


def test_scores_agree_with_lm_evaluation_harness(tmp_path: Path, tiny_model: Path) -> None:
    """The same local multiple-choice file, the same model: lm-eval's Python API and our
    evaluator must give the same acc and acc_norm, item by item."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    items = BENCHMARKS["capitals"]() + BENCHMARKS["facts"]() + BENCHMARKS["opposites"]()
    data = write_lm_eval_task(tmp_path / "tasks", "forgetful_mc", items)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    result = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8), tasks=["forgetful_mc"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks")), log_samples=True)
    theirs = sorted(result["samples"]["forgetful_mc"], key=lambda s: s["doc_id"])
    ours = multiple_choice(model, tokenizer, load_file_benchmark(
        FileBenchmark("mc_jsonl", str(data))), batch_size=8)
    assert [(s["acc"], s["acc_norm"]) for s in theirs] == [(o["acc"], o["acc_norm"])
                                                          for o in ours]
    summary = result["results"]["forgetful_mc"]
    assert summary["acc,none"] == pytest.approx(sum(o["acc"] for o in ours) / len(ours))
    assert summary["acc_norm,none"] == pytest.approx(sum(o["acc_norm"] for o in ours) / len(ours))


def test_text_files_split_into_documents(tmp_path: Path) -> None:
    from forgetful.evaluate.benchmarks import TextBenchmark, load_text_benchmark

    (tmp_path / "p.txt").write_text("First para\ngoes on.\n\n\nSecond one.\n")
    assert load_text_benchmark(TextBenchmark(str(tmp_path / "p.txt"))) == [
        "First para goes on.", "Second one."]
    (tmp_path / "w.raw").write_text(" = Alpha = \n\n Alpha is a letter .\n\n = = Use = = \n\n"
                                    " Often .\n = Beta = \n\n Beta follows .\n")
    docs = load_text_benchmark(TextBenchmark(str(tmp_path / "w.raw"), split="wikitext"))
    assert len(docs) == 2 and docs[0].startswith("= Alpha =") and "= = Use = =" in docs[0]
    assert load_text_benchmark(TextBenchmark(str(tmp_path / "w.raw"), "wikitext", limit=1)) \
        == docs[:1]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.txt: no text"):
        load_text_benchmark(TextBenchmark(str(tmp_path / "empty.txt")))
    with pytest.raises(ValueError, match="split must be one of paragraphs, wikitext, whole"):
        TextBenchmark(str(tmp_path / "p.txt"), split="lines")


def test_lm_eval_task_names_run_through_lm_eval(tmp_path: Path, tiny_model: Path) -> None:
    """evaluate.lm_eval_tasks: a task YAML over a local file, run by lm-eval, gives the
    same per-item acc as our own evaluator on the same file."""
    pytest.importorskip("lm_eval")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetful.evaluate.harness import run_tasks

    items = BENCHMARKS["facts"]()
    write_lm_eval_task(tmp_path / "tasks", "local_facts", items)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    scores, rows = run_tasks(model, tokenizer, ("local_facts",), str(tmp_path / "tasks"), 0, 8)
    ours = multiple_choice(model, tokenizer, items, batch_size=8)
    assert [r["acc"] for r in rows] == [o["acc"] for o in ours]
    assert scores["local_facts"]["acc"] == pytest.approx(
        sum(o["acc"] for o in ours) / len(ours), abs=1e-4)
    assert scores["local_facts"]["metric"] == "acc" and scores["local_facts"]["n"] == 20
    with pytest.raises(ConfigError, match="lm-eval knows no task .*no_such_task"):
        run_tasks(model, tokenizer, ("no_such_task",), str(tmp_path / "tasks"), 0, 8)


def test_general_suite_is_600_items_over_at_least_6_skills_of_60() -> None:
    from forgetful.evaluate.general import SKILLS

    suite = {name: make() for name, make in SKILLS.items()}
    assert len(suite) >= 6 and all(len(items) >= 60 for items in suite.values())
    assert sum(map(len, suite.values())) >= 600
    for name, items in suite.items():
        contexts = [it["context"] for it in items]
        assert len(set(contexts)) == len(contexts), f"{name} repeats a question"
        for it in items:
            assert len(set(it["choices"])) == len(it["choices"]) >= 2, (name, it)
            assert 0 <= it["answer"] < len(it["choices"]), (name, it)
            assert it["context"].startswith("Question: ") and it["context"].endswith("\nAnswer:")
        assert items == SKILLS[name](), f"{name} is not the same on a second call (seeded)"
    # Seeded distractors are spread over the positions, not always first or last.
    positions = [it["answer"] for items in suite.values() for it in items
                 if len(it["choices"]) == 4]
    assert all(positions.count(k) > len(positions) / 8 for k in range(4))


def test_story_cloze_uses_no_name_of_the_reading_task() -> None:
    from forgetful.data.builtin_tasks import READING
    from forgetful.evaluate.general import STORY_ANIMALS, STORY_NAMES

    for part in READING.values():
        assert not set(STORY_NAMES) & set(part["names"])
        assert not set(STORY_ANIMALS) & set(part["animals"])


def test_a_text_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    from forgetful.evaluate.benchmarks import TextBenchmark, load_text_benchmark

    path = tmp_path / "notes.txt"
    path.write_bytes(b"First paragraph.\n\nCaf\xe9 at the corner.\n")
    with pytest.raises(DataError, match=r"notes\.txt:3: not UTF-8 \(byte 0xe9 .*re-save"):
        load_text_benchmark(TextBenchmark(str(path)))
