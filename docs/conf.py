"""Sphinx configuration for the bulkhead documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -n``): any warning,
including a dangling cross-reference (``nitpicky``), fails the build.

Cross-references to Python, trio, attrs and outcome go through intersphinx
only when ``BULKHEAD_DOCS_INTERSPHINX=1`` is set, because fetching the
inventories needs the network and a failed fetch is a warning (so an error
under ``-W``). Without it, references into those projects are accepted
unresolved (``nitpick_ignore_regex`` below) and render as plain names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE / "_ext"))

import bulkhead  # noqa: E402

project = "bulkhead"
author = "The bulkhead developers"
copyright = "the bulkhead developers"
version = release = bulkhead.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
    "sphinxcontrib.openapi",
    # docs/_ext: writes _generated/openapi.json from the service's FastAPI
    # app and adds the openapi-service directive (service-api.rst).
    "bulkhead_openapi",
]

nitpicky = True
default_role = "py:obj"
primary_domain = "py"
highlight_language = "python3"
exclude_patterns = ["_build", "_generated"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "fully-qualified"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

EXTERNAL = (
    r"(trio|trio_parallel|outcome|attrs?|exceptiongroup"
    r"|collections\.abc|typing|contextvars|datetime|functools|math|signal|os)"
)

if os.environ.get("BULKHEAD_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "trio": ("https://trio.readthedocs.io/en/stable", None),
        "attrs": ("https://www.attrs.org/en/stable", None),
        "outcome": ("https://outcome.readthedocs.io/en/latest", None),
    }
else:
    intersphinx_mapping = {}
    nitpick_ignore_regex = [(r"py:.*", EXTERNAL + r"(\..*)?")]

# Field annotations are strings (``from __future__ import annotations``) that
# autodoc cannot evaluate once ``__module__`` says "bulkhead", so it shows them
# as written. These names in them are private aliases (described in the
# prose of each field) or outcome's classes, written unqualified.
nitpick_ignore = [
    ("py:class", "OnError"),
    ("py:class", "Kind"),
    ("py:class", "_P"),
    # Types of the optional extras' own libraries (no inventory offline).
    ("py:class", "CollectorRegistry"),
    ("py:class", "trace.Tracer"),
    ("py:class", "pydantic.main.BaseModel"),
    ("py:exc", "Rejected"),
    # Type variables of Job[_R] and of dispatch's typed signature.
    ("py:class", "_R"),
    ("py:class", "_Args"),
    ("py:class", "bulkhead._dispatcher._R"),
    ("py:class", "bulkhead._job._R"),
    ("py:class", "Value"),
    ("py:class", "Error"),
    # The service's names that docs/service.rst does not document (yet): its
    # Raises sections and signatures name them unqualified.
    ("py:class", "Journal"),
    ("py:class", "bulkhead.service._config.TokenSpec"),
    ("py:data", "OPTIONS"),
    *(
        ("py:exc", name)
        for name in (
            "JournalUnavailable",
            "SubmissionInvalid",
            "BacklogFull",
            "Unavailable",
            "JobNotFound",
            "JobFinished",
            "PortUnavailable",
        )
    ),
]

html_theme = "furo"
html_title = f"bulkhead {release}"
html_static_path = ["_static"]


def _merge_private_attribute_docs() -> None:
    """Let autodoc find the field docstrings of the public classes.

    ``bulkhead/__init__.py`` rewrites each public object's ``__module__`` to
    ``"bulkhead"`` (as trio does), so autodoc looks for the string literals
    under attrs fields in ``bulkhead/__init__.py`` and finds none. Merge what
    the private modules document into the analyzer of ``bulkhead``.
    """
    public = ModuleAnalyzer.for_module("bulkhead")
    public.analyze()
    for name in sorted(sys.modules):
        if name.startswith("bulkhead._"):
            private = ModuleAnalyzer.for_module(name)
            private.analyze()
            public.attr_docs.update(private.attr_docs)
            public.tagorder.update(private.tagorder)


_merge_private_attribute_docs()


def _attribute_docstrings_are_prose() -> None:
    """Render attribute docstrings as written.

    Napoleon reads the first line of an attribute's docstring as
    ``type: description`` when it has a colon, so ``"Default of
    :meth:`Dispatcher.dispatch`'s ``max_wait``: seconds..."`` rendered as
    "Type: Default of ..." and every ``Hooks`` field (``"``on_started(job)``:
    ..."``) lost its signature to a type line. Ours are prose; the type is
    the field's annotation, which autodoc shows already.
    """
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    def parse_attribute_docstring(self: GoogleDocstring) -> list[str]:
        lines: list[str] = self._consume_to_end()
        return lines

    GoogleDocstring._parse_attribute_docstring = (  # type: ignore[method-assign]
        parse_attribute_docstring
    )


_attribute_docstrings_are_prose()
