"""Sphinx configuration: ``make doc`` (pages are Markdown, read by myst-parser)."""

import os

project = "sb3_safemeta"
author = "sb3_safemeta developers"
with open(os.path.join(os.path.dirname(__file__), "..", "sb3_safemeta", "version.txt")) as file_handler:
    release = file_handler.read().strip()

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
html_theme = "alabaster"
