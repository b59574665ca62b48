"""Every example in examples/ is a real program: run each with small parameters."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def examples() -> Iterator[None]:
    # Imported by name (not run as __main__) so process workers can unpickle
    # the examples' module-level functions.
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLES))


def load(name: str) -> ModuleType:
    return __import__(name)


@pytest.mark.usefixtures("examples")
@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("rounds", ["--size", "16", "--tile", "8", "--rounds", "3", "--plain"]),
        (
            "rounds",
            [
                "--kind", "dask", "--size", "16", "--tile", "8", "--rounds", "2",
                "--workers", "2", "--plain",
            ],
        ),
        (
            "rounds",
            [
                "--kind", "async", "--size", "16", "--tile", "8", "--rounds", "3",
                "--plain",
            ],
        ),
        (
            "rounds",
            [
                "--kind", "process", "--size", "16", "--tile", "8", "--sweeps", "2",
                "--rounds", "2", "--workers", "2", "--plain",
            ],
        ),
        ("noisy_neighbour", ["--requests", "20", "--report-time", "0.05"]),
        ("failures", []),
        ("elastic_service", ["--seconds", "6", "--burst-rate", "100"]),
        ("flaky_dependency", ["--keys", "5", "--no-retry-keys", "2"]),
        (
            "shutdown_hook",
            ["--kill-after", "5", "--grace-period", "0.2", "--slow-time", "1"],
        ),
    ],
)  # fmt: skip
def test_example_runs_to_completion(
    module: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert load(module).main(argv) == 0
    assert capsys.readouterr().out.strip()


def test_every_example_is_exercised() -> None:
    tested = {
        "rounds",
        "noisy_neighbour",
        "flaky_dependency",
        "shutdown_hook",
        "elastic_service",
        "failures",
        "service_jobs",  # started as a server by tests/test_service.py
    }
    assert {path.stem for path in EXAMPLES.glob("*.py")} == tested
