"""lm-evaluation-harness tasks by name, scored through lm-eval's own Python API.

Optional: lm-eval is installed with `pip install -e .[eval]` (CI installs it). Its tasks
download their data from the Hugging Face hub unless the data is already in the local
datasets cache; `include_path` adds task YAMLs of your own, e.g. over local files
(dataset_path: json, dataset_kwargs: {data_files: ...}), kept under data/raw.
"""

from __future__ import annotations

from typing import Any

from forgetful.core.config import ConfigError, DataError


def primary_metric(metrics: dict[str, Any]) -> str:
    """acc if the task reports it, else its first numeric metric (exact_match, ...)."""
    names = [k.split(",")[0] for k, v in metrics.items()
             if isinstance(v, (int, float)) and "_stderr" not in k and k != "alias"]
    if not names:
        raise DataError(f"lm-eval returned no numeric metric: {sorted(metrics)}")
    return "acc" if "acc" in names else names[0]


def run_tasks(model: Any, tokenizer: Any, tasks: tuple[str, ...], include_path: str,
              limit: int, batch_size: int) -> tuple[dict[str, Any], list[dict]]:
    """Scores per task (every lm-eval metric, and `acc` = its primary metric) and per-item
    rows (kind general, acc = the item's primary metric) for the report's intervals."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ConfigError("evaluate.lm_eval_tasks needs lm-evaluation-harness: "
                          "pip install -e .[eval] (or set lm_eval_tasks: [])") from err
    manager = TaskManager(include_path=include_path or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"evaluate.lm_eval_tasks: lm-eval knows no task {unknown}; see "
                          "`lm-eval ls tasks`, or add a YAML under evaluate.lm_eval_include")
    try:
        result = lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
            tasks=list(tasks), task_manager=manager, log_samples=True, limit=limit or None)
    except (OSError, ConnectionError, ValueError) as err:
        raise DataError(f"lm-eval could not run {list(tasks)} ({type(err).__name__}: {err}); "
                        "with no network its data must be in the datasets cache or local "
                        "files named by a task YAML in evaluate.lm_eval_include") from err
    scores, rows = {}, []
    for task in tasks:
        metrics = result["results"][task]
        primary = primary_metric(metrics)
        samples = sorted(result["samples"][task], key=lambda s: s["doc_id"])
        scores[task] = {**{k.split(",")[0]: round(float(v), 4) for k, v in metrics.items()
                           if isinstance(v, (int, float)) and "_stderr" not in k},
                        "acc": round(float(metrics[f"{primary},none"]), 4), "metric": primary,
                        "n": len(samples)}
        rows += [{"kind": "general", "task": task, "id": f"{task}-{s['doc_id']}",
                  "instruction": str(s.get("arguments", ""))[:200],
                  "target": str(s.get("target")), "acc": float(s[primary])} for s in samples]
    return scores, rows
