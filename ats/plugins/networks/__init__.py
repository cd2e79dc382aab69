"""Attention and feature networks used by the tasks (registered by name)."""

from ats.plugins.networks import colon_cancer, mnist, small, speed_limits  # noqa: F401  (registers)
