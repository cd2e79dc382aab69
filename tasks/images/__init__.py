"""Your own images (docs/tasks/images.md): the label table (:mod:`.labels`),
checked sources, low views and splits (:mod:`.data`) and the task plugin
(:mod:`.task`)."""

from .data import ImageSourceDataset, LowPolicy, check_files, fold_split
from .labels import LabelTable, read_labels

__all__ = ["ImageSourceDataset", "LabelTable", "LowPolicy", "check_files", "fold_split",
           "read_labels"]
