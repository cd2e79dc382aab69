"""Model plugins (``--model``): attention sampling, the CNN baselines and the
peer patch-selection methods DPS and IPS (docs/methods.md)."""

from ats.plugins.models import baselines, dps, ips  # noqa: F401  (registers)
