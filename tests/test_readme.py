"""The README's quickstart is real code: run it and check what it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_quickstart_runs_and_prints_what_it_says() -> None:
    text = README.read_text()
    code = re.search(r"## Quickstart\s+```python\n(.*?)```", text, re.S)
    assert code is not None
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == "10 jobs, 285\n"
    assert "prints `10 jobs, 285`" in text


def test_readme_starts_with_the_two_setup_commands() -> None:
    first_block = README.read_text().split("```")[1]
    assert "make demo" in first_block
    assert "make test" in first_block
