"""Speed limits (Swedish Traffic Signs): the data layer and the task plugin.

The data layer is :mod:`.data` and :mod:`.annotations`, the plugin
:mod:`.task`; the package re-exports the dataset API. The task, its data
and its defaults: docs/tasks/speed_limits.md.
"""

from tasks.speed_limits.data import *  # noqa: F401,F403  (the names of its __all__)
from tasks.speed_limits.data import __all__  # noqa: F401
