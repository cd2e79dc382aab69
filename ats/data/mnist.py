"""A small, dependency-free reader for the four standard MNIST IDX files.

``load_mnist("train")`` returns the 60,000 training digits as ``uint8`` arrays
of shape ``(N, 28, 28)`` (pixel values 0..255) with their ``int64`` labels
``(N,)``; ``load_mnist("test")`` the 10,000 test digits.

Where the files are looked for, in this order (each file may be raw or
``.gz``; a directory ``D`` is accepted as ``D`` itself or as ``D/mnist``):

1. the ``data_dir`` argument (the CLI's ``--data-dir``),
2. the environment variable ``ATS_DATA_DIR``,
3. the user cache ``$XDG_CACHE_HOME/ats/mnist`` (default ``~/.cache/ats/mnist``).

Files found nowhere are downloaded into the user cache (``download=True``),
from the mirrors torchvision uses. Every file is checked against the md5 of
its *decompressed* content, so raw files and recompressed ``.gz`` files both
pass; a download is verified before it is renamed into place, so the cache
never holds a partial or corrupt file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "MNIST",
    "MNIST_FILES",
    "MNIST_MD5",
    "MIRRORS",
    "MNISTDataError",
    "cache_dir",
    "search_dirs",
    "parse_idx",
    "read_idx",
    "download_file",
    "load_mnist",
]

#: The two IDX files (images, labels) of each split, without extension.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: md5 of the decompressed (raw IDX) content of each file (the canonical
#: distribution's). Checking the content rather than the ``.gz`` bytes lets
#: recompressed and uncompressed copies pass.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: Mirrors tried in order for ``<mirror><name>.gz`` (the ones torchvision uses).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

# Files whose content already matched its md5 in this process, keyed by
# (real path, size, mtime_ns, expected md5): repeated loads skip the hashing.
_VERIFIED: set[tuple[str, int, int, str]] = set()


class MNISTDataError(ValueError):
    """An MNIST file exists but is unreadable, truncated, inconsistent or has
    the wrong checksum."""


class MNIST(NamedTuple):
    """One MNIST split: ``images`` uint8 (N, 28, 28) in 0..255, ``labels`` int64 (N,) in 0..9."""

    images: np.ndarray
    labels: np.ndarray


# --------------------------------------------------------------------------
# Locating files


def cache_dir() -> Path:
    """The user cache for MNIST: ``$XDG_CACHE_HOME/ats/mnist`` or ``~/.cache/ats/mnist``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "ats" / "mnist"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The directories searched, in order, each with where it came from.

    ``data_dir`` and ``$ATS_DATA_DIR`` are each tried as given and with
    ``/mnist`` appended, so both a data root and the MNIST folder itself work.
    """
    dirs: list[tuple[Path, str]] = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        dirs += [(d, "data_dir argument"), (d / "mnist", "data_dir argument")]
    env = os.environ.get("ATS_DATA_DIR")
    if env:
        d = Path(env).expanduser()
        dirs += [(d, "$ATS_DATA_DIR"), (d / "mnist", "$ATS_DATA_DIR")]
    dirs.append((cache_dir(), "user cache"))
    return dirs


def _find(name: str, dirs: Sequence[tuple[Path, str]]) -> Path | None:
    """First ``dir/name`` or ``dir/name.gz`` that is a file; raw wins within a directory."""
    for d, _ in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _describe_search(dirs: Sequence[tuple[Path, str]]) -> str:
    lines = [f"  - {d}  ({why})" for d, why in dirs]
    if not os.environ.get("ATS_DATA_DIR"):
        lines.append("  - $ATS_DATA_DIR  (not set)")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Parsing and verification


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one (decompressed) IDX file into a native-endian array.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B
    int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
    then one big-endian uint32 per dimension; the data follows, row-major.
    Raises :class:`MNISTDataError` naming ``source`` if the header is invalid or
    the data size disagrees with it (truncated file or trailing bytes).
    """
    if len(data) < 4:
        raise MNISTDataError(f"{source}: only {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise MNISTDataError(
            f"{source}: not an IDX file (magic bytes {data[:4].hex()}, expected 0000 followed by "
            f"a type code in {{{', '.join(hex(c) for c in _IDX_DTYPES)}}} and the number of dims)"
        )
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTDataError(f"{source}: truncated inside the header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise MNISTDataError(
            f"{source}: truncated: the header announces shape {dims} ({expected} bytes in all) "
            f"but the content has only {len(data)} bytes"
        )
    if len(data) > expected:
        raise MNISTDataError(
            f"{source}: {len(data) - expected} unexpected bytes after the data of shape {dims}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # A native-endian, writable copy: frombuffer on bytes is read-only.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _read_content(path: Path) -> bytes:
    """The decompressed bytes of ``path``.

    Gzip is recognised by its magic bytes rather than by the ``.gz`` name, so
    temporary download files and misnamed copies are read correctly (an IDX
    file starts with two zero bytes, gzip with 1f 8b).
    """
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        if path.suffix == ".gz" and data[:2] != b"\x00\x00":
            raise MNISTDataError(
                f"{path}: named .gz but not gzip-compressed (it starts with {data[:4].hex()}, "
                "gzip starts with 1f8b): the download is damaged (an HTML error page?); "
                "delete it and download it again"
            )
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise MNISTDataError(f"{path}: not a valid gzip file or truncated ({e})") from e


def read_idx(path: str | os.PathLike, expected_md5: str | None = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a numpy array.

    ``expected_md5`` is compared with the md5 of the *decompressed* content
    (skipped when None). A successful check is remembered for this process
    (keyed by path, size and modification time), so loading again is cheap.
    """
    path = Path(path)
    content = _read_content(path)
    arr = parse_idx(content, source=str(path))
    if expected_md5 is not None:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected_md5.lower())
        if key not in _VERIFIED:
            digest = hashlib.md5(content).hexdigest()
            if digest != expected_md5.lower():
                raise MNISTDataError(
                    f"{path}: checksum mismatch: md5 of the decompressed content is {digest}, "
                    f"expected {expected_md5.lower()} (corrupt or not the canonical MNIST file)"
                )
            _VERIFIED.add(key)
    return arr


def _check_split(split: str, images: np.ndarray, labels: np.ndarray, paths: tuple[Path, Path]) -> None:
    """Check that a pair of IDX arrays forms an MNIST split."""
    ipath, lpath = paths
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise MNISTDataError(
            f"{ipath}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise MNISTDataError(f"{lpath}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise MNISTDataError(
            f"MNIST {split} split: {ipath} holds {len(images)} images but {lpath} "
            f"holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise MNISTDataError(f"{lpath}: labels must lie in 0..9, found {int(labels.max())}")


# --------------------------------------------------------------------------
# Downloading


def download_file(url: str, dest: str | os.PathLike, timeout: float = 60.0) -> None:
    """Stream ``url`` into the file ``dest`` with a tqdm progress bar.

    Writes ``dest`` directly; callers pass a temporary path and rename it once
    the content is verified.
    """
    from tqdm.auto import tqdm  # only needed when downloading

    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))


def _download_into_cache(name: str, expected_md5: str | None, target_dir: Path) -> tuple[Path | None, list[str]]:
    """Download ``name.gz`` into ``target_dir``, verified, via a temp file + atomic rename.

    Returns the final path (None on failure) and one error line per failed mirror.
    Concurrent processes (e.g. several ranks) may both download; each renames
    a complete, verified file, so the last rename wins harmlessly.
    """
    errors: list[str] = []
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return None, [f"cannot create the cache directory {target_dir}: {e}"]
    final = target_dir / f"{name}.gz"
    for mirror in MIRRORS:
        url = f"{mirror}{name}.gz"
        fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{name}.gz.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            download_file(url, tmp)
            read_idx(tmp, expected_md5)  # verify before it becomes visible
            os.replace(tmp, final)
            return final, errors
        except Exception as e:  # network, HTTP, disk or verification error: try the next mirror
            errors.append(f"{url}: {type(e).__name__}: {e}")
        finally:
            if tmp.exists():
                tmp.unlink()
    return None, errors


# --------------------------------------------------------------------------
# Public entry point


def load_mnist(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    checksums: Mapping[str, str | None] | None = None,
) -> MNIST:
    """Load one MNIST split.

    Args:
        split: ``"train"`` (60,000 digits) or ``"test"`` (10,000 digits).
        data_dir: directory searched first (as given and with ``/mnist``).
        download: download missing files into :func:`cache_dir` when True.
        checksums: expected md5 of the decompressed content per file name
            (without ``.gz``); defaults to :data:`MNIST_MD5`. A name missing
            from the mapping, or mapped to None, is not verified.

    Returns:
        ``MNIST(images, labels)``: uint8 (N, 28, 28) in 0..255 and int64 (N,).

    Raises:
        FileNotFoundError: a file is found nowhere and could not be downloaded;
            the message lists the files and the directories searched.
        MNISTDataError (a ValueError): a file is corrupt, truncated or inconsistent.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    checksums = MNIST_MD5 if checksums is None else checksums
    names = MNIST_FILES[split]
    dirs = search_dirs(data_dir)

    paths: dict[str, Path] = {}
    missing = []
    for name in names:
        found = _find(name, dirs)
        if found is None:
            missing.append(name)
        else:
            paths[name] = found

    failures: list[str] = []
    if missing and download:
        for name in missing:
            got, errors = _download_into_cache(name, checksums.get(name), cache_dir())
            if got is not None:
                paths[name] = got
            else:
                failures += errors
        missing = [n for n in missing if n not in paths]

    if missing:
        how = "download disabled (download=False)" if not download else (
            "download failed:\n" + "\n".join(f"  - {f}" for f in failures)
        )
        raise FileNotFoundError(
            f"MNIST {split} split: missing {', '.join(n + '[.gz]' for n in missing)}.\n"
            f"Searched, in order:\n{_describe_search(dirs)}\n"
            f"{how}\n"
            f"Put the IDX files ({', '.join(n for s in MNIST_FILES.values() for n in s)}; "
            f"raw or .gz) in one of these places: pass --data-dir/data_dir=DIR, set "
            f"ATS_DATA_DIR=DIR (DIR or DIR/mnist), or copy them to {cache_dir()}."
        )

    def read(name: str) -> np.ndarray:
        try:
            return read_idx(paths[name], checksums.get(name))
        except MNISTDataError as e:
            raise MNISTDataError(
                f"MNIST {split} split: bad file: {e}.\nReplace {paths[name]} with a good copy of "
                f"{name} (raw or .gz), or delete it to have it searched for elsewhere / downloaded "
                f"again into {cache_dir()}."
            ) from e

    images, labels = read(names[0]), read(names[1])
    _check_split(split, images, labels, (paths[names[0]], paths[names[1]]))
    return MNIST(images, labels.astype(np.int64))
