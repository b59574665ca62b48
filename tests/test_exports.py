"""The public surface: exactly ``__all__``, documented, and named ``bulkhead.X``."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import bulkhead

SOURCE = "".join(p.read_text() for p in Path(bulkhead.__file__).parent.glob("*.py"))


def test_all_lists_exactly_the_public_names() -> None:
    # Submodules (bulkhead.metrics, once imported) are attributes, not names.
    public = {
        name
        for name in dir(bulkhead)
        if not name.startswith("_") and not inspect.ismodule(getattr(bulkhead, name))
    }
    assert set(bulkhead.__all__) == public
    assert len(bulkhead.__all__) == len(set(bulkhead.__all__))


TYPE_ALIASES = {"Kind", "OnError"}
"""Public type aliases: typing objects with no docstring or module of their
own, documented in the reference instead."""


def test_every_public_name_is_documented_and_lives_in_bulkhead() -> None:
    reference = (Path(__file__).parents[1] / "docs" / "reference.rst").read_text()
    for name in bulkhead.__all__:
        if name in TYPE_ALIASES:
            assert f".. py:data:: {name}" in reference, name
            continue
        obj = getattr(bulkhead, name)
        assert obj.__module__ == "bulkhead", name
        assert inspect.getdoc(obj), name


def test_public_classes_other_than_exceptions_are_final() -> None:
    for name in bulkhead.__all__:
        obj = getattr(bulkhead, name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            if issubclass(obj, int):  # Priority is an IntEnum, extendable by design
                continue
            if sys.version_info >= (3, 11):
                assert getattr(obj, "__final__", False), name
            else:  # typing.final sets __final__ only from 3.11 on
                assert re.search(rf"@final\n(@.*\n)*class {name}\b", SOURCE), name


def test_the_metrics_and_tracing_modules_document_what_they_export() -> None:
    import bulkhead.metrics
    import bulkhead.tracing

    assert bulkhead.metrics.__all__ == ["PrometheusMetrics"]
    assert bulkhead.tracing.__all__ == ["JobSpans"]
    for module in (bulkhead.metrics, bulkhead.tracing):
        assert inspect.getdoc(module)
        for name in module.__all__:
            assert inspect.getdoc(getattr(module, name)), name


def test_package_ships_py_typed() -> None:
    assert Path(bulkhead.__file__).with_name("py.typed").is_file()
