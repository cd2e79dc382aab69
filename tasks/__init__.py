"""Task plugins: one package per task (data, default networks, defaults).

Importing this package registers the built-in tasks.
"""

from tasks.colon_cancer import task as _colon_cancer  # noqa: F401  (registers)
from tasks.find_pattern import task as _find_pattern  # noqa: F401  (registers)
from tasks.mega_mnist import task as _mega_mnist  # noqa: F401  (registers)
from tasks.speed_limits import task as _speed_limits  # noqa: F401  (registers)
