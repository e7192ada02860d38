"""Sphinx configuration for the kwscompress docs (built with -W: warnings are errors)."""

from kwscompress import __version__

project = "kwscompress"
author = "the kwscompress developers"
release = version = __version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
# Heavy optional imports are only needed at run time, never to render the docs.
autodoc_mock_imports = ["tensorflow", "tflite_micro"]
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
