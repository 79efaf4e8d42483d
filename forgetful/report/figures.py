"""The report's figures (matplotlib, headless): base vs tuned bars, the training curve,
and learning vs forgetting across every experiment found in MLflow."""

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
