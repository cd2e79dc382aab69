"""Speed limits (Swedish Traffic Signs): the task plugin (:mod:`.task`) and its data layer.

This package re-exports the dataset API of :mod:`tasks.speed_limits.data`
(importing it stays light: the plugin is registered by importing
:mod:`tasks`). The task, its data and its defaults: docs/tasks/speed_limits.md.
"""

from tasks.speed_limits.data import *  # noqa: F401,F403  (the names of its __all__)
from tasks.speed_limits.data import __all__  # noqa: F401
