"""The README's generated blocks: figures the README shows are written there by the script
that measured them (benchmarks/speed.py, stages/run_study.py, stages/run_seeds.py, and
this module for the single-run report, the remedy and the timings), between marker
lines, so every figure in the README is a copy of a file in reports/.

Run:    python -m forgetful.report.readme   # the report block from reports/forgetting.md
        (`make readme`, after `dvc repro`)
"""

from __future__ import annotations

from pathlib import Path

from forgetful.core.artifacts import write_text

REPORT_BLOCK = ("<!-- report: written by `make readme` from reports/forgetting.md -->",
                "<!-- /report -->")
REMEDY_BLOCK = ("<!-- remedy: written by `make readme` from reports/forgetting.md -->",
                "<!-- /remedy -->")
TIMINGS_BLOCK = ("<!-- timings: written by `make readme` from reports/timings.md -->",
                 "<!-- /timings -->")
NARROW_BLOCK = ("<!-- narrow: written by `make readme` from reports/remedy/narrow.md -->",
                "<!-- /narrow -->")
DPO_BLOCK = ("<!-- dpo: written by `make readme` from reports/dpo/dpo.md -->", "<!-- /dpo -->")


def write_between(path: str | Path, start: str, end: str, body: str) -> bool:
    """Replace what lies between the marker lines `start` and `end` of a text file with
    `body`; False, and the file untouched, when it lacks either marker."""
    path = Path(path)
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    if start not in page or end not in page.split(start, 1)[1]:
        return False
    head, rest = page.split(start, 1)
    write_text(path, f"{head}{start}\n{body.rstrip()}\n{end}{rest.split(end, 1)[1]}")
    return True


def section_body(text: str) -> str:
    """A report page as a README block: below its title, its `##` headings one level under
    the README section (`####`) that holds it, its links relative to the repository."""
    body = text.split("\n", 2)[2].replace("\n## ", "\n#### ")
    return body.replace("](study/", "](reports/study/")


def report_excerpt(text: str, samples: int = 2) -> str:
    """The single-run report's headline, its benchmark table, the tasks' second columns
    and the first `samples` sample generations."""
    body = text.split("\n", 2)[2]  # below the title
    head = body.split("\nScores in percent", 1)[0].rstrip()
    parts = [head]
    if "## Tasks, second columns" in body:
        section = body.split("## Tasks, second columns", 1)[1]
        parts.append("\n".join(line for line in section.strip().split("\n\n", 1)[0]
                               .splitlines() if line.startswith("|")))
    if samples and "## Sample generations" in body:
        table = [line for line in body.split("## Sample generations", 1)[1].splitlines()
                 if line.startswith("|")]
        parts.append("\n".join(table[:2 + samples]))
    return "\n\n".join(parts) + "\n"


def remedy_excerpt(text: str) -> str:
    """The single-run report's Remedy section (select_model), its figure linked from the
    repository root; "" when the report has none (the stage off)."""
    if "\n## Remedy" not in text:
        return ""
    section = "## Remedy" + text.split("\n## Remedy", 1)[1]
    lines = []
    for line in section.splitlines():
        if line.startswith("## ") and lines:
            break
        lines.append(line)
        if line.startswith("![remedy]("):
            break
    body = "\n".join(lines[1:]).strip()  # below its heading: the README's own names it
    return body.replace("](remedy/", "](reports/remedy/") + "\n"


def main(readme: Path = Path("README.md"), report: Path = Path("reports/forgetting.md"),
         narrow: Path = Path("reports/remedy/narrow.md"),
         timings: Path = Path("reports/timings.md"),
         dpo: Path = Path("reports/dpo/dpo.md")) -> None:
    text = report.read_text()
    for block, body in ((REPORT_BLOCK, report_excerpt(text)),
                        (REMEDY_BLOCK, remedy_excerpt(text)),
                        (TIMINGS_BLOCK, section_body(timings.read_text())
                         if timings.exists() else None),
                        (NARROW_BLOCK, section_body(narrow.read_text())
                         if narrow.exists() else None),
                        (DPO_BLOCK, report_excerpt(dpo.read_text(), samples=0)
                         if dpo.exists() else None)):
        if body is None:
            continue
        if not write_between(readme, *block, body):
            raise SystemExit(f"{readme} has no {block[0]} ... {block[1]} block")
        print(f"readme: {readme} {block[0].split(':')[0][5:]} block <- its report")


if __name__ == "__main__":
    main()
