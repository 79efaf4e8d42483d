"""The README's generated blocks: figures the README shows are written there by the script
that measured them (benchmarks/speed.py, stages/run_study.py), between marker lines, so
every figure in the README is a copy of a file in reports/."""

from __future__ import annotations

from pathlib import Path

from forgetful.core.artifacts import write_text


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
