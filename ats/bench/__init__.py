"""Benchmarks, run as commands (``ats-bench extract``, ...), not as tests.

Each prints figures and the ratios between them measured side by side in
one run on one machine, and can write them as JSON (``--json``).
"""
