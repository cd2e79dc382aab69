"""Training and evaluation: configuration, engine, checkpoints, logs, pictures.

Import :class:`ats.train.engine.Trainer` for the loop itself.
"""

from ats.train.config import RunConfig, apply_overrides

__all__ = ["RunConfig", "apply_overrides"]
