"""The README's Python examples run as written, each in an empty folder (issue 28)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def test_the_readme_has_python_examples() -> None:
    examples = python_examples()
    assert len(examples) >= 2
    assert all("from primia.api import" in example for example in examples)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_examples())))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    example = python_examples()[index]
    printed = io.StringIO()
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(example, f"README.md example {index + 1}", "exec"), {})
    finally:
        os.chdir(previous)
    lines = printed.getvalue().split()
    assert lines, "the example printed nothing"
    assert "None" not in printed.getvalue().splitlines()[0]
