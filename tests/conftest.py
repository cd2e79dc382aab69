"""What every test module shares: the CUDA skip, where the real data sets are,
and shared fixtures.

* ``@pytest.mark.cuda`` tests are skipped, with one reason, where no CUDA
  device is present (:func:`pytest_runtest_setup`).
* Every test starts from the same state of Python's, numpy's and torch's
  global generators (:func:`seeded`): an unseeded draw is the same on every
  run, whatever ran before.
* Real data sets are looked for in ``$ATS_DATA_DIR``, then in
  ``../shared/data`` next to the repository (:func:`data_dirs`); tests that
  need one take the :func:`mnist_dir` or :func:`real_root` fixture and are
  skipped when it is absent.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

#: the one reason given for every skipped ``@pytest.mark.cuda`` test
CUDA_SKIP_REASON = "needs a CUDA device"
#: the repository's root
REPO = Path(__file__).resolve().parents[1]
#: the shared data folder next to the repository
SHARED_DATA = REPO.parent / "shared" / "data"
#: the four MNIST files (gzipped) a real-MNIST test needs
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip(CUDA_SKIP_REASON)


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Seed the global generators before every test."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def data_dirs() -> list[Path]:
    """Where real data sets may be, in order: ``$ATS_DATA_DIR``, then the
    shared data folder next to the repository."""
    env = os.environ.get("ATS_DATA_DIR")
    return [Path(d) for d in (env, SHARED_DATA) if d]


def find_real_root(find_root: Callable[[str], Path],
                   dirs: list[Path] | None = None) -> Path | None:
    """The data set's root found by ``find_root`` (a task's own locator, which
    raises ``FileNotFoundError``) in ``dirs`` (default :func:`data_dirs`), or None."""
    for d in data_dirs() if dirs is None else dirs:
        try:
            return find_root(str(d))
        except FileNotFoundError:
            pass
    return None


def find_mnist_dir() -> Path | None:
    """The folder holding the four gzipped MNIST files, or None."""
    for d in data_dirs():
        for candidate in (d / "mnist", d):
            if all((candidate / f"{name}.gz").is_file() for name in MNIST_FILES):
                return candidate
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files' folder; the test is skipped without them. (Session
    scoped, so it is found before a test's own fixtures unset ``$ATS_DATA_DIR``.)"""
    found = find_mnist_dir()
    if found is None:
        pytest.skip("real MNIST files not available ($ATS_DATA_DIR or ../shared/data)")
    return found


@pytest.fixture(scope="session")
def real_root() -> Callable[[Callable[[str], Path], str], Path]:
    """``real_root(find_root, what)``: the real data set's root, or skip the
    test naming ``what``."""

    dirs = data_dirs()  # now, before a test's own fixtures change the environment

    def locate(find_root: Callable[[str], Path], what: str) -> Path:
        found = find_real_root(find_root, dirs)
        if found is None:
            pytest.skip(f"{what} data not available ($ATS_DATA_DIR or ../shared/data)")
        return found

    return locate
