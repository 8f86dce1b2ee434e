"""Sphinx configuration: the Markdown pages of docs/ and an API reference from the docstrings.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import sqlalchemy_eventstore

project = "sqlalchemy_eventstore"
author = "sqlalchemy_eventstore developers"
copyright = "sqlalchemy_eventstore developers"
release = sqlalchemy_eventstore.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "images/README.md"]
myst_heading_anchors = 3

# Docstrings: Google style (Args/Returns/Raises); signatures keep their hints.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_mock_imports: list[str] = []
# Names the docstrings mention in roles (EventData, ALL_STREAM, ...) are
# resolved against the package root, where they are documented.
default_role = "py:obj"
nitpicky = False

html_theme = "alabaster"
html_static_path: list[str] = []
html_title = f"sqlalchemy_eventstore {release}"
