"""The built-in task plugins: one package per task, its data layer and its ``Task`` plugin.

Each ``tasks/<name>/`` holds the data (``data.py`` and helpers) and the task
plugin (``task.py``: defaults, presets and which registered networks to use;
the networks themselves are in :mod:`ats.plugins.networks`). Importing this
package registers the tasks; the registry imports it (the ``ats.plugins``
entry point ``tasks``) on its first lookup.
Each task is described in docs/tasks/<name>.md.
"""

from tasks.colon_cancer import task as _colon_cancer  # noqa: F401  (registers)
from tasks.find_pattern import task as _find_pattern  # noqa: F401  (registers)
from tasks.images import task as _images  # noqa: F401  (registers)
from tasks.mega_mnist import task as _mega_mnist  # noqa: F401  (registers)
from tasks.speed_limits import task as _speed_limits  # noqa: F401  (registers)
