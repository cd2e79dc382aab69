"""Several runs side by side (``ats-compare``): learning curves, where each
model looked on the same test images, and a table of their test errors.

* :mod:`ats.compare.runs`: what is read from a run directory, and the check
  that runs were tested on the same images;
* :mod:`ats.compare.figures`: ``curves.png`` and ``selections.png``;
* :mod:`ats.compare.report`: ``compare.md`` and :func:`compare_runs`, the
  whole command.
"""

from ats.compare.report import compare_runs, markdown_table, selection_columns
from ats.compare.runs import (
           Run,
           check_same_test_set,
           load_model,
           load_run,
           read_metrics,
)

__all__ = ["Run", "check_same_test_set", "compare_runs", "load_model", "load_run",
           "markdown_table", "read_metrics", "selection_columns"]
