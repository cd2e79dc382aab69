"""Reading image files with ats.data.images: sizes, RGB conversion and the errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ats.data.images import read_image_size, read_rgb_image


def test_size_and_rgb_of_a_grayscale_png(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    assert read_image_size(tmp_path / "g.png") == (3, 4)
    arr = read_rgb_image(tmp_path / "g.png", expected_size=(3, 4))
    assert arr.dtype == np.uint8 and arr.shape == (3, 4, 3) and arr.flags.writeable
    assert all(np.array_equal(arr[..., c], gray) for c in range(3))


def test_errors_name_the_file(tmp_path):
    Image.fromarray(np.zeros((2, 5, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a\.png is 2x5 \(HxW\) pixels, expected 5x2"):
        read_rgb_image(tmp_path / "a.png", expected_size=(5, 2))
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*b\.png"):
        read_image_size(tmp_path / "b.png")
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*b\.png"):
        read_rgb_image(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*c\.png"):
        read_image_size(tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"cannot decode image .*c\.png"):
        read_rgb_image(tmp_path / "c.png")
