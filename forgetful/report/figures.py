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


def note(text: str, path: Path) -> None:
    """A figure that says why there is nothing to plot (a stage that is off)."""
    import textwrap

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(text, 70), ha="center", va="center", fontsize=9)
    _save(plt, fig, path)


def remedy(rows: list[dict], budget: float, chosen: str, path: Path) -> None:
    """Learning against forgetting on the selection split, with 95% intervals: the base at
    the origin, the strengths joined along α, the kept steps along training, and the
    budget line; the chosen candidate circled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))

    def xy(r: dict) -> tuple[float, float]:
        return 100 * r["forgetting"]["value"], 100 * r["learning"]["value"]

    rows = [r for r in rows if r["forgetting"] and r["learning"]]
    for label, members, style in (
            ("along α (strength)", [r for r in rows if r["step"] is None], "-o"),
            ("along training (kept steps)", [r for r in rows if r["step"] is not None
                                             or r["alpha"] == 1 and r["source"] == "final"],
             "--s")):
        if len(members) < 2 and label.startswith("along training"):
            continue
        members = sorted(members, key=lambda r: (r["step"] or 10**9, r["alpha"]))
        pts = [(0.0, 0.0)] + [xy(r) for r in members] if label.startswith("along α") else \
            [xy(r) for r in members]
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        for r in members:
            x, y = xy(r)
            f, g = r["forgetting"]["ci"], r["learning"]["ci"]
            ax.errorbar(x, y, xerr=[[x - 100 * f[0]], [100 * f[1] - x]],
                        yerr=[[y - 100 * g[0]], [100 * g[1] - y]], color=line.get_color(),
                        alpha=0.35, linewidth=1)
            ax.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if r["name"] == chosen:
                ax.plot([x], [y], "o", markersize=14, fillstyle="none", color="black",
                        label=f"chosen: {chosen}")
    ax.axvline(-100 * budget, color="red", linestyle=":", label=f"budget (−{100 * budget:g} pts)")
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("forgetting: change elsewhere vs base (points, selection split)")
    ax.set_ylabel("learning: gain on trained tasks (points)")
    ax.set_title("Remedy candidates: learning vs forgetting")
    ax.legend(fontsize=7, loc="best")
    _save(plt, fig, path)
