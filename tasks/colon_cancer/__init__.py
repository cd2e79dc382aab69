"""Colon cancer histopathology (CRCHistoPhenotypes, ATS_SPEC section 3.3): the data layer.

The task plugin (networks, defaults, registration) is added separately; this
package only re-exports the dataset API so that importing it stays light.
See :mod:`tasks.colon_cancer.data` for the expected files, the k-fold
protocol and the item format.
"""

from tasks.colon_cancer.data import *  # noqa: F401,F403  (the names of its __all__)
from tasks.colon_cancer.data import __all__  # noqa: F401
