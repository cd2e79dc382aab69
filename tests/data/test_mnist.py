"""Tests of the MNIST IDX reader: parsing, lookup order, checksums, downloads, errors.

All but the last test build tiny IDX files in tmp_path; the network is never
touched (the download function is replaced in every test).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import ats.data.mnist as mnist
from ats.data.mnist import MNISTDataError, cache_dir, load_mnist, parse_idx, read_idx

TRAIN_IMAGES, TRAIN_LABELS = mnist.MNIST_FILES["train"]
#: the real downloader, before the autouse fixture below replaces it
REAL_DOWNLOAD = mnist.download_file
TEST_IMAGES, TEST_LABELS = mnist.MNIST_FILES["test"]


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as an IDX file (big-endian data, as the format requires)."""
    code = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
            np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}[arr.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def tiny_split(n: int = 12, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinguishable digits; ``offset`` shifts labels and pixels so copies differ."""
    rng = np.random.RandomState(offset)
    images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
    labels = ((np.arange(n) + offset) % 10).astype(np.uint8)
    return images, labels


def write_split(directory: Path, split: str = "train", gz: bool = False, n: int = 12,
                offset: int = 0) -> dict[str, str]:
    """Write one split's two files; returns their content md5s (the injectable checksums)."""
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = tiny_split(n, offset)
    sums = {}
    for name, arr in zip(mnist.MNIST_FILES[split], (images, labels)):
        data = idx_bytes(arr)
        sums[name] = hashlib.md5(data).hexdigest()
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return sums


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, no ATS_DATA_DIR, a fresh verification memo, and no network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ATS_DATA_DIR", raising=False)
    monkeypatch.setattr(mnist, "_VERIFIED", set())

    def no_network(url, dest, timeout=60.0):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(mnist, "download_file", no_network)


# --------------------------------------------------------------------------
# IDX parsing


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_parse_idx_round_trip_all_type_codes(dtype):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    out = parse_idx(idx_bytes(arr))
    assert out.shape == (2, 3, 5)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable copy, not a view on the bytes


def test_parse_idx_rejects_bad_magic_and_sizes():
    good = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(MNISTDataError, match=r"f\.idx: not an IDX file"):
        parse_idx(b"\x00\x01" + good[2:], "f.idx")
    with pytest.raises(MNISTDataError, match="not an IDX file"):
        parse_idx(b"\x00\x00\x07\x03" + good[4:], "f.idx")  # unknown type code
    with pytest.raises(MNISTDataError, match="too short"):
        parse_idx(b"\x00\x00", "f.idx")
    with pytest.raises(MNISTDataError, match="inside the header"):
        parse_idx(good[:9], "f.idx")
    with pytest.raises(MNISTDataError, match=r"truncated: .*\(4, 28, 28\).*3152 bytes.*3151 bytes"):
        parse_idx(good[:-1], "f.idx")
    with pytest.raises(MNISTDataError, match="2 unexpected bytes"):
        parse_idx(good + b"\x00\x00", "f.idx")


# --------------------------------------------------------------------------
# Loading raw and gzipped files, checksums


@pytest.mark.parametrize("gz", [False, True])
def test_load_raw_and_gz(tmp_path, gz):
    sums = write_split(tmp_path / "d", gz=gz)
    images, labels = load_mnist("train", tmp_path / "d", download=False, checksums=sums)
    exp_images, exp_labels = tiny_split()
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (12,)
    np.testing.assert_array_equal(images, exp_images)
    np.testing.assert_array_equal(labels, exp_labels)


def test_checksum_is_of_the_decompressed_content(tmp_path):
    # Two gz files with different bytes (level, mtime) but the same content both pass.
    sums = write_split(tmp_path / "a", gz=True)
    images, labels = tiny_split()
    d = tmp_path / "b"
    d.mkdir()
    (d / f"{TRAIN_IMAGES}.gz").write_bytes(gzip.compress(idx_bytes(images), compresslevel=1, mtime=12345))
    (d / f"{TRAIN_LABELS}.gz").write_bytes(gzip.compress(idx_bytes(labels), compresslevel=9, mtime=0))
    assert (d / f"{TRAIN_IMAGES}.gz").read_bytes() != (tmp_path / "a" / f"{TRAIN_IMAGES}.gz").read_bytes()
    a = load_mnist("train", tmp_path / "a", download=False, checksums=sums)
    b = load_mnist("train", d, download=False, checksums=sums)
    np.testing.assert_array_equal(a.images, b.images)


def test_checksum_mismatch_names_the_file(tmp_path):
    sums = write_split(tmp_path / "d", gz=True)
    sums[TRAIN_LABELS] = "0" * 32
    with pytest.raises(MNISTDataError) as err:
        load_mnist("train", tmp_path / "d", download=False, checksums=sums)
    msg = str(err.value)
    assert f"{TRAIN_LABELS}.gz: checksum mismatch" in msg
    assert f"expected {'0' * 32}" in msg and sums[TRAIN_IMAGES] not in msg


def test_default_checksums_reject_non_canonical_files(tmp_path):
    write_split(tmp_path / "d")
    with pytest.raises(MNISTDataError, match=f"{TRAIN_IMAGES}: checksum mismatch.*{mnist.MNIST_MD5[TRAIN_IMAGES]}"):
        load_mnist("train", tmp_path / "d", download=False)


def test_unverified_names_are_skipped(tmp_path):
    write_split(tmp_path / "d")
    images, _ = load_mnist("train", tmp_path / "d", download=False, checksums={TRAIN_LABELS: None})
    assert images.shape == (12, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_is_named(tmp_path, gz):
    sums = write_split(tmp_path / "d", gz=gz)
    name = f"{TRAIN_IMAGES}.gz" if gz else TRAIN_IMAGES
    path = tmp_path / "d" / name
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MNISTDataError) as err:
        load_mnist("train", tmp_path / "d", download=False, checksums=sums)
    msg = str(err.value)
    assert str(path) in msg
    assert ("not a valid gzip file or truncated" if gz else "truncated: the header announces shape (12, 28, 28)") in msg
    assert "Replace" in msg


def test_inconsistent_counts(tmp_path):
    write_split(tmp_path / "d")
    _, labels = tiny_split()
    (tmp_path / "d" / TRAIN_LABELS).write_bytes(idx_bytes(labels[:11]))
    with pytest.raises(MNISTDataError, match="holds 12 images but .* holds 11 labels"):
        load_mnist("train", tmp_path / "d", download=False, checksums={})


def test_wrong_image_shape_and_label_range(tmp_path):
    d = tmp_path / "d"
    write_split(d)
    (d / TRAIN_IMAGES).write_bytes(idx_bytes(np.zeros((12, 27, 28), np.uint8)))
    with pytest.raises(MNISTDataError, match=r"shape \(N, 28, 28\), got uint8 \(12, 27, 28\)"):
        load_mnist("train", d, download=False, checksums={})
    write_split(d)
    (d / TRAIN_LABELS).write_bytes(idx_bytes(np.full(12, 10, np.uint8)))
    with pytest.raises(MNISTDataError, match="labels must lie in 0..9, found 10"):
        load_mnist("train", d, download=False, checksums={})


def test_unknown_split():
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\], got 'val'"):
        load_mnist("val")


def test_verification_is_memoised_per_process(tmp_path, monkeypatch):
    sums = write_split(tmp_path / "d", gz=True)
    calls = []
    real_md5 = hashlib.md5

    def counting_md5(data=b""):
        calls.append(len(data))
        return real_md5(data)

    monkeypatch.setattr(hashlib, "md5", counting_md5)
    load_mnist("train", tmp_path / "d", download=False, checksums=sums)
    assert len(calls) == 2
    load_mnist("train", tmp_path / "d", download=False, checksums=sums)
    assert len(calls) == 2  # not hashed again
    # A changed file (new size / mtime) is verified again, and fails.
    images, _ = tiny_split(offset=3)
    (tmp_path / "d" / f"{TRAIN_IMAGES}.gz").write_bytes(gzip.compress(idx_bytes(images[:11])))
    with pytest.raises(MNISTDataError, match="checksum mismatch"):
        load_mnist("train", tmp_path / "d", download=False, checksums=sums)
    assert len(calls) == 3


# --------------------------------------------------------------------------
# Where files are looked for


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "ats" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "ats" / "mnist"


def test_lookup_order(tmp_path, monkeypatch):
    """data_dir, data_dir/mnist, $ATS_DATA_DIR, $ATS_DATA_DIR/mnist, then the cache."""
    places = {
        "arg": tmp_path / "arg",
        "arg/mnist": tmp_path / "arg" / "mnist",
        "env": tmp_path / "env",
        "env/mnist": tmp_path / "env" / "mnist",
        "cache": cache_dir(),
    }
    sums = {}
    for offset, d in enumerate(places.values(), start=1):
        sums.update({f"{offset}:{k}": v for k, v in write_split(d, gz=offset % 2 == 0, offset=offset).items()})
    monkeypatch.setenv("ATS_DATA_DIR", str(places["env"]))

    def loaded_offset(data_dir):
        _, labels = load_mnist("train", data_dir, download=False, checksums={})
        return int(labels[0])  # label 0 of the copy written with `offset` is offset % 10

    assert loaded_offset(places["arg"]) == 1
    for name in mnist.MNIST_FILES["train"]:  # the data_dir root loses its files
        (places["arg"] / name).unlink()
    assert loaded_offset(places["arg"]) == 2
    assert loaded_offset(None) == 3
    for name in mnist.MNIST_FILES["train"]:
        (places["env"] / name).unlink()
    assert loaded_offset(None) == 4
    monkeypatch.delenv("ATS_DATA_DIR")
    assert loaded_offset(None) == 5
    assert loaded_offset(tmp_path / "nowhere") == 5


def test_raw_wins_over_gz_in_one_directory(tmp_path):
    write_split(tmp_path / "d", gz=True, offset=1)
    write_split(tmp_path / "d", gz=False, offset=2)
    _, labels = load_mnist("train", tmp_path / "d", download=False, checksums={})
    assert int(labels[0]) == 2


# --------------------------------------------------------------------------
# Missing files and downloads


def test_missing_with_download_disabled_lists_files_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("ATS_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("test", tmp_path / "arg", download=False)
    msg = str(err.value)
    for expected in (f"{TEST_IMAGES}[.gz]", f"{TEST_LABELS}[.gz]", str(tmp_path / "arg"),
                     str(tmp_path / "arg" / "mnist"), str(tmp_path / "env"), str(tmp_path / "env" / "mnist"),
                     str(cache_dir()), "download disabled", "ATS_DATA_DIR=DIR", "--data-dir"):
        assert expected in msg, expected
    assert "$ATS_DATA_DIR  (not set)" not in msg


def test_missing_without_env_says_it_is_not_set(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\$ATS_DATA_DIR  \(not set\)"):
        load_mnist("train", download=False)


def test_failed_download_reports_every_mirror_and_leaves_no_file(tmp_path, monkeypatch):
    tried = []

    def offline(url, dest, timeout=60.0):
        tried.append(url)
        Path(dest).write_bytes(b"partial")  # a half-written temp file must be removed
        raise OSError("network is unreachable")

    monkeypatch.setattr(mnist, "download_file", offline)
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("train")
    msg = str(err.value)
    assert len(tried) == 2 * len(mnist.MIRRORS)  # both files, every mirror
    for mirror in mnist.MIRRORS:
        assert f"{mirror}{TRAIN_IMAGES}.gz: OSError: network is unreachable" in msg
    assert "download failed" in msg and str(cache_dir()) in msg
    assert list(cache_dir().iterdir()) == []


def test_download_fills_only_the_missing_file_into_the_cache(tmp_path, monkeypatch):
    sums = write_split(tmp_path / "src", gz=True)
    # Labels are present in data_dir, images only "online".
    (tmp_path / "d").mkdir()
    os.replace(tmp_path / "src" / f"{TRAIN_LABELS}.gz", tmp_path / "d" / f"{TRAIN_LABELS}.gz")
    tried = []

    def fake_download(url, dest, timeout=60.0):
        tried.append(url)
        if url.startswith(mnist.MIRRORS[0]):
            raise OSError("HTTP Error 503")  # the first mirror is down: the second is used
        Path(dest).write_bytes((tmp_path / "src" / url.rsplit("/", 1)[-1]).read_bytes())

    monkeypatch.setattr(mnist, "download_file", fake_download)
    images, labels = load_mnist("train", tmp_path / "d", checksums=sums)
    np.testing.assert_array_equal(images, tiny_split()[0])
    assert tried == [f"{m}{TRAIN_IMAGES}.gz" for m in mnist.MIRRORS]
    assert sorted(p.name for p in cache_dir().iterdir()) == [f"{TRAIN_IMAGES}.gz"]


def test_corrupt_download_is_not_kept(tmp_path, monkeypatch):
    sums = write_split(tmp_path / "src", gz=True)

    def bad_download(url, dest, timeout=60.0):
        data = (tmp_path / "src" / url.rsplit("/", 1)[-1]).read_bytes()
        Path(dest).write_bytes(data[: len(data) // 2])  # truncated transfer

    monkeypatch.setattr(mnist, "download_file", bad_download)
    with pytest.raises(FileNotFoundError, match="not a valid gzip file or truncated"):
        load_mnist("train", checksums=sums)
    assert list(cache_dir().iterdir()) == []


def test_the_real_downloader_fetches_from_a_file_url_into_the_cache(tmp_path, monkeypatch):
    """The download path end to end, served by file:// URLs: the first
    mirror is missing, the second serves; both files land verified in the cache."""
    sums = write_split(tmp_path / "mirror", gz=True)
    monkeypatch.setattr(mnist, "download_file", REAL_DOWNLOAD)
    monkeypatch.setattr(mnist, "MIRRORS", ((tmp_path / "gone").as_uri() + "/",
                                           (tmp_path / "mirror").as_uri() + "/"))
    images, labels = load_mnist("train", tmp_path / "empty", checksums=sums)
    np.testing.assert_array_equal(images, tiny_split()[0])
    np.testing.assert_array_equal(labels, tiny_split()[1])
    names = (f"{TRAIN_IMAGES}.gz", f"{TRAIN_LABELS}.gz")
    assert sorted(p.name for p in cache_dir().iterdir()) == sorted(names)  # nothing partial
    for name in names:
        assert (cache_dir() / name).read_bytes() == (tmp_path / "mirror" / name).read_bytes()
    # the next load reads the cache: no mirror is needed
    monkeypatch.setattr(mnist, "MIRRORS", ())
    again, _ = load_mnist("train", checksums=sums)
    np.testing.assert_array_equal(again, images)


# --------------------------------------------------------------------------
# The real files


def test_real_mnist(mnist_dir):
    train = load_mnist("train", mnist_dir, download=False)  # default (canonical) checksums
    test = load_mnist("test", mnist_dir.parent, download=False)  # a data root works too
    assert train.images.shape == (60000, 28, 28) and train.labels.shape == (60000,)
    assert test.images.shape == (10000, 28, 28) and test.labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert abs(train.images.mean(dtype=np.float64) / 255 - 0.13066) < 1e-4


def test_a_gz_file_that_is_not_gzip_is_called_what_it_is(tmp_path):
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"<!DOCTYPE html><html>404 not found</html>")
    with pytest.raises(mnist.MNISTDataError, match=r"named \.gz but not gzip-compressed.*"
                       r"3c21444f.*download it again"):
        read_idx(bad)
