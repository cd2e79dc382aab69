"""Find the pattern: a small synthetic task with no data files.

A noisy image hides one 8x8 texture (four classes with the same mean
brightness); the low-resolution view shows *where* it is but not *which* it
is, so a model must attend to the right place and look at it in full
resolution. Used for smoke tests and as a first example; see
docs/tasks/find_pattern.md.
"""

from tasks.find_pattern.data import PATTERNS, FindPatternDataset

__all__ = ["PATTERNS", "FindPatternDataset"]
