"""Colon cancer histology (CRCHistoPhenotypes): the data layer and the task plugin.

The data layer is :mod:`.data`, the plugin :mod:`.task`; the package
re-exports the dataset API. The task, its data and its defaults:
docs/tasks/colon_cancer.md.
"""

from tasks.colon_cancer.data import *  # noqa: F401,F403  (the names of its __all__)
from tasks.colon_cancer.data import __all__  # noqa: F401
