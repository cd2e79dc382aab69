"""Files a run can rely on: atomic writes and checked checkpoints.

Every file is written to a temporary name in the same directory, flushed to
disk, then renamed over the target (``os.replace`` is atomic on POSIX and
Windows), so readers see either the old file or the new one.

A checkpoint is PyTorch's own zip format, whose every record carries a
CRC-32: :func:`load_checkpoint` verifies them all before unpickling (a
damaged file would otherwise load silently with wrong weights). Writing a
new checkpoint first keeps the current one as ``<name>.prev.pt``, so a bad
write or a damaged disk block never leaves nothing to resume
(:func:`load_latest_checkpoint`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "CheckpointError",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_path",
    "save_checkpoint",
    "verify_checkpoint",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; files should look ordinary
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # name the file the user knows, not the temporary one
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}", str(path)) from None
    except BaseException:
        # also on KeyboardInterrupt: never leave the temporary file behind
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


class CheckpointError(ValueError):
    """A checkpoint file that is damaged or not a checkpoint."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint before ``path``'s current one is kept."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], *,
                    keep_previous: bool = True) -> None:
    """``torch.save`` ``state`` to ``path`` atomically, keeping the checkpoint
    it replaces as :func:`previous_path` (``keep_previous``)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    _verify_zip(io.BytesIO(data), path)  # never replace a good checkpoint by a bad one
    if keep_previous and path.is_file():
        _keep_copy(path, previous_path(path))
    atomic_write_bytes(path, data)


def _keep_copy(path: Path, copy: Path) -> None:
    """Make ``copy`` an atomic copy of ``path`` (a hard link where possible)."""
    tmp = copy.with_name(f".{copy.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # no hard links on this file system
        shutil.copyfile(path, tmp)
    os.replace(tmp, copy)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check every record of the checkpoint at ``path`` against its CRC-32.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, damaged or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; nothing to resume")
    _verify_zip(path, path)


def _verify_zip(source: Any, path: Path) -> None:
    try:
        with zipfile.ZipFile(source) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(
            f"the checkpoint {path} is truncated or not a checkpoint ({exc})") from None
    if bad is not None:
        raise CheckpointError(
            f"the checkpoint {path} is damaged: its record {bad!r} fails its CRC-32 check")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verified first.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: damaged, truncated, or not a checkpoint.
    """
    path = Path(path)
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a foreign file that happens to be a valid zip
        raise CheckpointError(f"cannot read the checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint")
    return state


def load_latest_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                           ) -> tuple[dict[str, Any], Path]:
    """The checkpoint at ``path``, or, when that one is missing or damaged, the
    previous one kept beside it (with a warning saying so); returns the state
    and the file it came from.

    Raises:
        FileNotFoundError: neither file exists.
        CheckpointError: the one that exists is damaged (both, when both are).
    """
    path = Path(path)
    try:
        return load_checkpoint(path, map_location), path
    except (FileNotFoundError, CheckpointError) as exc:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous, map_location)
        except CheckpointError as older:
            raise CheckpointError(f"{exc}; the previous one is unusable too: {older}") from None
        warnings.warn(f"{exc}; using the previous checkpoint {previous} instead",
                      RuntimeWarning, stacklevel=2)
        return state, previous
