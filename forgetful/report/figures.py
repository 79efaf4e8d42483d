"""The report's figures (matplotlib, headless): base vs tuned bars, the training curve,
forgetting during training (the probe), and learning vs forgetting across every
experiment found in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scores(rows: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["base"] for r in rows], 0.4, label="base")
    ax.bar([x + 0.2 for x in xs], [r["tuned"] for r in rows], 0.4, label="tuned")
    ax.set_xticks(list(xs), [f"{r['benchmark']}\n({r['kind']})" for r in rows], fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("score")
    ax.set_title("Base vs tuned: learned (trained tasks) and kept (the rest)")
    ax.legend(loc="upper right", ncol=2)
    _save(plt, fig, path)


def curve(points: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["step"] for c in points], [c["loss"] for c in points])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_title("Training curve")
    _save(plt, fig, path)


def probe(points: list[dict], items: dict[str, int], trained: set[str], path: Path) -> None:
    """Probe scores against optimizer step: the general-suite subsample and each evaluated
    task's held-out items (trained tasks solid, untrained dashed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [x["step"] for x in points]
    for name in [k for k in points[0] if k != "step"]:
        label = "general suite subsample" if name == "general" else name
        style = "-" if name in trained else "--"
        ax.plot(steps, [100 * x[name] for x in points], style, marker="o", markersize=3,
                linewidth=2.2 if name == "general" else 1.4,
                label=f"{label} ({items.get(name, '?')} items"
                      f"{', trained' if name in trained else ''})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("score (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Learning and forgetting during training (probe)")
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)


def experiments(points: list[dict], current: dict, path: Path) -> None:
    """Mean gain on trained tasks (x) vs mean change elsewhere (y), one point per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if points:
        ax.scatter([100 * p["gain"] for p in points], [100 * p["change"] for p in points],
                   color="tab:gray", label="other runs in MLflow")
        for p in points:
            ax.annotate(p["name"], (100 * p["gain"], 100 * p["change"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.scatter([100 * current["gain"]], [100 * current["change"]], color="tab:red",
               marker="*", s=160, label="this run")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("learned: mean gain on trained tasks (points)")
    ax.set_ylabel("kept: mean change elsewhere (points)")
    ax.set_title("Learning vs forgetting across experiments")
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)
