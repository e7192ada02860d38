"""The analysis report of a run: ``report.html`` (self-contained) and ``report.md``.

:func:`write_report` renders every section registered through the
``kws_register_report_sections`` hook; :mod:`kwscompress.report.blocks` holds the building
blocks sections are made of (tables, figures, notes), for built-in and plugin sections alike.
"""

from __future__ import annotations

from kwscompress.report.render import current_plugin_manager, load_run, write_report

__all__ = ["current_plugin_manager", "load_run", "write_report"]
