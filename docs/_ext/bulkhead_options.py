"""The options of ``bulkhead serve``, as a table generated from ``OPTIONS``.

``bulkhead.service._config.OPTIONS`` is the one place each option is defined:
it drives the flags, the ``BULKHEAD_*`` variables, the defaults and
``--help``. The ``.. bulkhead-options::`` directive (``service.rst``) renders
the same table when the documentation is built, so the page cannot drift
from the code: a new option, a changed default or a reworded help appears
at the next build. ``tests/test_docs_options.py`` checks that the page uses
the directive and that no page names a variable the service does not have.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util.docutils import SphinxDirective

HEADER = ("Flag", "Variable", "Default", "What it sets")
"""The table's columns."""


def rows() -> list[tuple[str, str, str, str]]:
    """One row per option, in the order of ``OPTIONS`` (``--help``'s):
    flag, variable, default as ``--help`` shows it, and the help text."""
    from bulkhead.service._config import OPTIONS

    table = []
    for option in OPTIONS.values():
        default = option.shown_default or (
            "none" if option.default is None else str(option.default)
        )
        text = option.help[:1].upper() + option.help[1:]
        table.append((option.flag, option.variable, default, f"{text}."))
    return table


def _cell(text: str, literal: bool) -> nodes.entry:
    content = nodes.literal(text, text) if literal else nodes.Text(text)
    return nodes.entry("", nodes.paragraph("", "", content))


class OptionsTable(SphinxDirective):
    """``.. bulkhead-options::``: the table of :func:`rows`."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        """Build the table node."""
        widths = (22, 28, 22, 48)
        group = nodes.tgroup(cols=len(HEADER))
        group += [nodes.colspec(colwidth=width) for width in widths]
        head = nodes.row()
        head += [_cell(name, literal=False) for name in HEADER]
        body = nodes.tbody()
        for flag, variable, default, text in rows():
            row = nodes.row()
            row += [
                _cell(flag, literal=True),
                _cell(variable, literal=True),
                _cell(default, literal=True),
                _cell(text, literal=False),
            ]
            body += row
        group += nodes.thead("", head)
        group += body
        table = nodes.table("", group, classes=["bulkhead-options"])
        return [table]


PRIVATE_TYPES = [
    # Service(journal=...) is typed with the journal interface, which is
    # private (bulkhead.service._journal) until a second store ships.
    ("py:class", "Journal"),
    # Submission.run_at, when intersphinx to Python is off (conf.py).
    ("py:class", "datetime.datetime"),
    # The private parts Service's docstring names (they have no page).
    ("py:class", "bulkhead.service._intake.Intake"),
    ("py:class", "bulkhead.service._feeder.Feeder"),
    ("py:class", "bulkhead.service._running.RunningJobs"),
]
"""Names in the service's public signatures that have no page to link to."""


def _ignore_private_types(app: Sphinx, config: Config) -> None:
    config.nitpick_ignore = [*config.nitpick_ignore, *PRIVATE_TYPES]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the ``bulkhead-options`` directive, and accept the types of
    :data:`PRIVATE_TYPES` unresolved."""
    app.add_directive("bulkhead-options", OptionsTable)
    app.connect("config-inited", _ignore_private_types)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
