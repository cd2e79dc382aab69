"""Speed limits (Swedish Traffic Signs, ATS_SPEC section 3.2): the data layer.

The task plugin (networks, defaults, registration) is added separately; this
package only re-exports the dataset API so that importing it stays light.
See :mod:`tasks.speed_limits.data` for the expected files, the filtering
and the item format.
"""

from tasks.speed_limits.data import *  # noqa: F401,F403  (the names of its __all__)
from tasks.speed_limits.data import __all__  # noqa: F401
