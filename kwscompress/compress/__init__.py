"""Compression sweeps: recipes expanded into variants, run by an executor, cached by key.

:mod:`~kwscompress.compress.recipes` expands the ``[compress]`` config into variant specs,
:mod:`~kwscompress.compress.context` gives steps their data and training loop,
:mod:`~kwscompress.compress.variant` runs one variant into a ``results.json`` row, and
:mod:`kwscompress.stages.compress` drives a whole sweep (cache, executor, resume).
"""
