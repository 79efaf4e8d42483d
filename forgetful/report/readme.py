"""The README's generated blocks: figures the README shows are written there by the script
that measured them (benchmarks/speed.py, stages/run_study.py, stages/run_seeds.py, and
this module for the single-run report), between marker lines, so every figure in the
README is a copy of a file in reports/.

Run:    python -m forgetful.report.readme   # the report block from reports/forgetting.md
        (`make readme`, after `dvc repro`)
"""

from __future__ import annotations

from pathlib import Path

from forgetful.core.artifacts import write_text

REPORT_BLOCK = ("<!-- report: written by `make readme` from reports/forgetting.md -->",
                "<!-- /report -->")


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
    if "## Sample generations" in body:
        table = [line for line in body.split("## Sample generations", 1)[1].splitlines()
                 if line.startswith("|")]
        parts.append("\n".join(table[:2 + samples]))
    return "\n\n".join(parts) + "\n"


def main(readme: Path = Path("README.md"), report: Path = Path("reports/forgetting.md")
         ) -> None:
    if not write_between(readme, *REPORT_BLOCK, report_excerpt(report.read_text())):
        raise SystemExit(f"{readme} has no {REPORT_BLOCK[0]} ... {REPORT_BLOCK[1]} block")
    print(f"readme: {readme} report block <- {report}")


if __name__ == "__main__":
    main()
