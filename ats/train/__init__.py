"""Training and evaluation: the engine, checkpoints, metrics, pictures.

Import :class:`ats.train.engine.Trainer` for the loop itself; the run
configuration lives in :mod:`ats.config`.
"""
