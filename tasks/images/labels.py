"""Which file has which label: ``labels.csv`` or class sub-folders
(docs/tasks/images.md, "Your data").

``DIR/labels.csv`` has a header row and the columns ``path`` and ``label``,
and optionally ``split`` (``train`` or ``test``); paths are relative to
``DIR`` (or absolute). Without it, every sub-folder of ``DIR`` is a class
holding its images, or ``DIR/train/<class>/`` and ``DIR/test/<class>/``
give the split too. Labels are names; the classes are sorted (numerically
when every label is an integer) and numbered from 0.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LABELS_FILE", "IMAGE_SUFFIXES", "LabelTable", "read_labels"]

LABELS_FILE = "labels.csv"
#: files taken from class sub-folders (labels.csv may name any file)
IMAGE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".btf", ".npy", ".png", ".jpg", ".jpeg", ".bmp",
                  ".svs", ".ndpi", ".mrxs", ".scn", ".zarr")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class LabelTable:
    """The images of a data set and their labels.

    Attributes:
        paths: one file per image, in the table's order.
        labels: each image's label as written.
        splits: each image's split (``train`` or ``test``), or None when the
            table does not say.
        classes: the distinct labels in class-number order.
        targets: int64 (n,), each image's class number.
        where: what the table was read from (for messages).
    """

    paths: list[Path]
    labels: list[str]
    splits: list[str] | None
    classes: list[str]
    targets: np.ndarray
    where: str

    def __len__(self) -> int:
        return len(self.paths)


def read_labels(data_dir: str | os.PathLike) -> LabelTable:
    """The label table of ``data_dir`` (``labels.csv``, else class folders).

    Raises:
        FileNotFoundError: no such folder, or neither a labels.csv nor class
            sub-folders in it.
        ValueError: a labels.csv without the ``path`` and ``label`` columns,
            with an empty or unknown split, or with no rows.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    table = root / LABELS_FILE
    if table.is_file():
        return _read_csv(table)
    return _read_folders(root)


def _read_csv(table: Path) -> LabelTable:
    with table.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise ValueError(
                f"{table} must have a header row with the columns path,label[,split]; "
                f"{' and '.join(missing)} missing (found: {', '.join(columns) or 'no header'})")
        reader.fieldnames = columns
        rows = [(i + 2, row) for i, row in enumerate(reader)]  # line numbers, header = 1
    rows = [(n, r) for n, r in rows if any((v or "").strip() for v in r.values())]
    if not rows:
        raise ValueError(f"{table} lists no images")
    bad = [f"line {n}" for n, r in rows if not (r["path"] or "").strip()
           or not (r["label"] or "").strip()]
    if bad:
        raise ValueError(f"{table}: empty path or label on {', '.join(bad[:10])}")
    paths = [_resolve(table.parent, r["path"].strip()) for _, r in rows]
    labels = [r["label"].strip() for _, r in rows]
    splits = None
    if "split" in columns:
        splits = [(r.get("split") or "").strip().lower() for _, r in rows]
        wrong = [f"line {n} ({s!r})" for (n, _), s in zip(rows, splits) if s not in SPLITS]
        if wrong:
            raise ValueError(f"{table}: split must be train or test, not on "
                             f"{', '.join(wrong[:10])}")
    return _table(paths, labels, splits, str(table))


def _read_folders(root: Path) -> LabelTable:
    split_roots = [root / s for s in SPLITS]
    if all(p.is_dir() for p in split_roots):
        entries = [(p, c, s) for s, sr in zip(SPLITS, split_roots) for c, p in _class_files(sr)]
        splits: list[str] | None = [s for _, _, s in entries]
    else:
        entries = [(p, c, "") for c, p in _class_files(root)]
        splits = None
    if not entries:
        raise FileNotFoundError(
            f"no {LABELS_FILE} in {root} and no class sub-folders holding images; write "
            f"{root / LABELS_FILE} with the columns path,label[,split] (docs/tasks/images.md)")
    return _table([p for p, _, _ in entries], [c for _, c, _ in entries], splits,
                  f"the class folders of {root}")


def _class_files(folder: Path) -> list[tuple[str, Path]]:
    """(class, file) for the images in each sub-folder of ``folder``, sorted."""
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(sub.iterdir()):
            if f.name.lower().endswith(IMAGE_SUFFIXES):
                found.append((sub.name, f))
    return found


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _table(paths: list[Path], labels: list[str], splits: list[str] | None,
           where: str) -> LabelTable:
    distinct = set(labels)
    numeric = all(_is_int(v) for v in distinct)
    classes = sorted(distinct, key=(lambda v: int(v)) if numeric else None)
    number = {c: i for i, c in enumerate(classes)}
    targets = np.array([number[v] for v in labels], dtype=np.int64)
    return LabelTable(paths, labels, splits, classes, targets, where)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
