"""The speed-limits data layer on small fixtures written in the data set's on-disk format."""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ats.data.transforms import (
    ImageLinearTransform,
    ImagePan,
    as_float_image,
    item_rng,
    pan,
    resize_bilinear,
)
from tasks.speed_limits import (
    CLASSES,
    EXPECTED_COUNTS,
    Sign,
    SpeedLimits,
    class_weights,
    find_root,
    label_of,
    parse_annotations,
    parse_number,
    set_name,
)

SIZE = (60, 80)  # (H, W) of the fixture images; the real ones are 960x1280
LOW = (18, 24)  # scaled_size(SIZE, 0.3)

# Set1 annotations: (line, expected label or None if dropped/skipped). Line numbers are 1-based.
SET1 = [
    ("e1.jpg:", 0),                                                                     # 1 no sign: EMPTY
    ("e2.jpg:MISC_SIGNS;", 0),                                                          # 2 MISC only: EMPTY
    ("v50.jpg:VISIBLE, 40, 30, 20, 10, PROHIBITORY, 50_SIGN;", 1),                      # 3
    ("b70.jpg:BLURRED, 40, 30, 20, 10, PROHIBITORY, 70_SIGN;", None),                   # 4 blurred only
    ("mix.jpg:VISIBLE, 40, 30, 20, 10, PROHIBITORY, 50_SIGN;"
     "VISIBLE, 70, 50, 10, 5, PROHIBITORY, 30_SIGN;", 1),                               # 5 the 30 is ignored
    ("mix2.jpg:OCCLUDED, 40, 30, 20, 10, PROHIBITORY, 50_SIGN;"
     "VISIBLE, 70, 50, 10, 5, PROHIBITORY, 30_SIGN;", None),                            # 6 the 50 decides
    ("other.jpg:VISIBLE, 40, 30, 20, 10, OTHER, PEDESTRIAN_CROSSING;", None),            # 7 no limit
    ("v80r.jpg:VISIBLE, 40.5x7, 30, 20, 10, PROHIBITORY, 80_SIGN;", 3),                 # 8 repaired number
    ("sort.jpg:VISIBLE, 30, 30, 20, 20, PROHIBITORY, 50_SIGN;"
     "VISIBLE, 60, 60, 10, 10, PROHIBITORY, 70_SIGN;"
     "BLURRED, 100, 100, 0, 0, PROHIBITORY, 80_SIGN;", 2),                              # 9 visible first, then area
    ("m1.jpg:MISC_SIGNS;VISIBLE, 40, 30, 20, 10, PROHIBITORY, 70_SIGN;", 2),            # 10
    ("bad1.jpg VISIBLE, 1, 2, 3", None),                                                # 11 no ':'
    ("bad2.jpg:VISIBLE, 40, 30, 20, PROHIBITORY, 50_SIGN;", None),                      # 12 6 fields
    ("bad3.jpg:VISIBLE, abc, 30, 20, 10, PROHIBITORY, 50_SIGN;", None),                 # 13 not a number
    ("", None),                                                                          # 14 blank, ignored
]
KEPT = [(line.split(":")[0], lab) for line, lab in SET1 if lab is not None]
SET2 = [
    ("t1.jpg:", 0),
    ("t2.jpg:VISIBLE, 40, 30, 20, 10, PROHIBITORY, 80_SIGN;", 3),
    ("t3.jpg:SIDE_ROAD, 40, 30, 20, 10, PROHIBITORY, 80_SIGN;", None),
]


def colour(k: int) -> tuple[int, int, int]:
    return (40 + 20 * k, 100, 180 - 10 * k)


def write_jpeg(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = SIZE) -> None:
    arr = np.empty((*size, 3), dtype=np.uint8)
    arr[:] = rgb
    arr[: size[0] // 4, : size[1] // 4] = 255  # a corner of another value, so pans and flips are visible
    Image.fromarray(arr).save(path, quality=95)


def write_set(folder: Path, lines, kept) -> None:
    folder.mkdir(parents=True)
    (folder / "annotations.txt").write_text("\n".join(line for line, _ in lines) + "\n")
    for k, (name, _) in enumerate(kept):
        write_jpeg(folder / name, colour(k))


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    write_set(tmp_path / "Set1", SET1, KEPT)
    write_set(tmp_path / "Set2", SET2, [(line.split(":")[0], lab) for line, lab in SET2 if lab is not None])
    return tmp_path


def make(root: Path, split: str = "train", **kwargs) -> SpeedLimits:
    kwargs.setdefault("image_size", SIZE)
    # Set1 has three malformed lines: every train set built from it warns once about them.
    with pytest.warns(UserWarning, match="3 annotation line") if split == "train" else nullcontext():
        return SpeedLimits(root, split, **kwargs)


# --------------------------------------------------------------------------- parsing and filtering


def test_parse_number_repairs_trailing_garbage():
    assert parse_number("40.5") == (40.5, False)
    assert parse_number(" 40.5x7") == (40.5, True)
    assert parse_number("862.795455,") == (862.795455, True)
    with pytest.raises(ValueError):
        parse_number("abc")


def test_parse_annotations_reports_malformed_lines_with_line_numbers(root):
    images, issues = parse_annotations(root / "Set1" / "annotations.txt")
    assert [im.filename for im in images] == [line.split(":")[0] for line, _ in SET1[:10]]
    skipped = [(i.line, i.action) for i in issues if i.action == "skipped"]
    assert skipped == [(11, "skipped"), (12, "skipped"), (13, "skipped")]
    assert all(i.file == str(root / "Set1" / "annotations.txt") for i in issues)
    assert "no ':'" in issues[[i.line for i in issues].index(11)].reason
    assert "6 fields" in issues[[i.line for i in issues].index(12)].reason
    assert "'abc'" in issues[[i.line for i in issues].index(13)].reason
    repaired = [i for i in issues if i.action == "repaired"]
    assert [(i.line, "40.5x7" in i.reason) for i in repaired] == [(8, True)]
    # The bbox mapping: x2, y2, x1, y1 -> x_max, y_max, x_min, y_min; MISC entries dropped.
    v80 = images[7].signs[0]
    assert (v80.x_max, v80.y_max, v80.x_min, v80.y_min, v80.name) == (40.5, 30.0, 20.0, 10.0, "80_SIGN")
    assert images[1].signs == () and len(images[9].signs) == 1


def test_label_of_follows_the_spec_rules():
    def s(vis, size, name):
        return Sign(vis, 0.0, 0.0, float(size), float(size), "PROHIBITORY", name)

    assert label_of([]) == (0, "empty")
    assert label_of([s("VISIBLE", 5, "30_SIGN")]) == (None, "no_speed_limit")
    assert label_of([s("BLURRED", 5, "70_SIGN")]) == (None, "not_visible")
    # The bigger visible limit wins; a bigger non-visible one ranks after all visible ones.
    assert label_of([s("VISIBLE", 5, "50_SIGN"), s("VISIBLE", 9, "80_SIGN"), s("OCCLUDED", 99, "70_SIGN")]) == \
        (3, "speed_limit")
    # Equal area: the first in the file wins (stable sort, as the original's sorted()).
    assert label_of([s("VISIBLE", 5, "70_SIGN"), s("VISIBLE", 5, "50_SIGN")]) == (2, "speed_limit")
    # An unknown visibility is never VISIBLE and never breaks the sort.
    assert label_of([s("FOGGY", 9, "50_SIGN"), s("VISIBLE", 1, "80_SIGN")]) == (3, "speed_limit")


def test_set_name_follows_the_original_seed_rule():
    assert (set_name("train", 0), set_name("test", 0)) == ("Set1", "Set2")
    assert (set_name("train", 1), set_name("test", 1)) == ("Set2", "Set1")
    with pytest.raises(ValueError, match="split"):
        set_name("val")


def test_dataset_counts_labels_and_order(root):
    ds = make(root, "train", augment=False)
    assert len(ds) == 7
    assert [p.name for p in ds.paths] == [n for n, _ in KEPT]
    assert ds.targets.tolist() == [lab for _, lab in KEPT] == [0, 0, 1, 1, 3, 2, 2]
    assert ds.counts == {"listed": 10, "skipped_lines": 3, "empty": 2, "speed_limit": 5,
                         "no_speed_limit": 1, "not_visible": 2, "missing": 0, "kept": 7}
    assert ds.class_counts.tolist() == [2, 2, 2, 1]
    test = make(root, "test")
    assert test.set_name == "Set2" and test.targets.tolist() == [0, 3] and not test.augment


def test_class_weights():
    np.testing.assert_allclose(class_weights([0, 0, 1, 1, 3, 2, 2]), [0.875, 0.875, 0.875, 1.75], rtol=1e-6)
    np.testing.assert_allclose(class_weights([0, 0, 0, 1]), [1 / 3, 1.0, 0.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="0..3"):
        class_weights([0, 4])


# --------------------------------------------------------------------------- files on disk


def test_missing_image_raises_naming_it_or_is_skipped(root):
    (root / "Set1" / "v50.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="v50.jpg"):
        make(root, "train")
    with pytest.warns(UserWarning, match="1 missing image"):
        ds = make(root, "train", missing="skip")
    assert len(ds) == 6 and "v50.jpg" not in [p.name for p in ds.paths]
    assert ds.counts["missing"] == 1
    assert any(i.action == "skipped" and "v50.jpg" in i.reason and i.line == 3 for i in ds.issues)


def test_dropped_images_need_not_exist(root):
    assert not (root / "Set1" / "b70.jpg").exists()
    assert len(make(root, "train")) == 7


def test_wrong_image_size_is_a_clear_error(root):
    write_jpeg(root / "Set1" / "m1.jpg", (1, 2, 3), size=(SIZE[0] + 2, SIZE[1]))
    with pytest.raises(ValueError, match=r"expected 60x80 HxW pixels\): \S*m1\.jpg is 62x80"):
        make(root, "train")
    ds = make(root, "train", check_images=False)
    with pytest.raises(ValueError, match=r"m1\.jpg is 62x80 \(HxW\) pixels, expected 60x80"):
        ds[6]


def test_missing_set_folder_and_annotations(root):
    shutil.rmtree(root / "Set2")
    with pytest.raises(FileNotFoundError, match=r"(?s)Set2 folder not found.*Set1/annotations.txt"):
        SpeedLimits(root, "test", image_size=SIZE)
    (root / "Set1" / "annotations.txt").unlink()
    with pytest.raises(FileNotFoundError, match="annotations file not found.*Set1"):
        SpeedLimits(root, "train", image_size=SIZE)


def test_find_root(root, tmp_path_factory, monkeypatch):
    monkeypatch.delenv("ATS_DATA_DIR", raising=False)
    assert find_root(root) == root
    parent = tmp_path_factory.mktemp("data")
    (parent / "speed_limits").symlink_to(root)
    assert find_root(parent) == parent / "speed_limits"
    monkeypatch.setenv("ATS_DATA_DIR", str(parent))
    assert find_root() == parent / "speed_limits"
    monkeypatch.delenv("ATS_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="Set1Part0.zip"):
        find_root(tmp_path_factory.mktemp("empty"))


# --------------------------------------------------------------------------- items


def test_item_without_augmentation(root):
    ds = make(root, "train", augment=False)
    item = ds[4]
    assert set(item) == {"x_low", "x_high", "y", "index"}
    assert item["y"] == 3 and item["index"] == 4
    x_high = item["x_high"]
    assert x_high.dtype == torch.uint8 and x_high.shape == (3, *SIZE)
    # The colour of v80r.jpg (k=4) in RGB order, away from the bright corner; JPEG is lossy.
    centre = x_high[:, SIZE[0] // 2, SIZE[1] // 2].int()
    assert (centre - torch.tensor(colour(4))).abs().max() <= 3
    assert item["x_low"].dtype == torch.float32 and item["x_low"].shape == (3, *LOW)
    torch.testing.assert_close(item["x_low"], resize_bilinear(as_float_image(x_high), LOW, "asymmetric"))
    assert torch.equal(ds[4]["x_high"], x_high)


def test_bgr_flips_channels(root):
    rgb = make(root, "train", augment=False)[3]["x_high"]
    bgr = make(root, "train", augment=False, bgr=True)[3]["x_high"]
    assert torch.equal(bgr, rgb.flip(0))
    assert not torch.equal(bgr, rgb)


def test_real_image_size_gives_the_paper_low_view(tmp_path):
    folder = tmp_path / "Set1"
    folder.mkdir()
    (folder / "annotations.txt").write_text("big.jpg:VISIBLE, 400, 300, 200, 100, PROHIBITORY, 70_SIGN;\n")
    write_jpeg(folder / "big.jpg", (120, 60, 30), size=(960, 1280))
    ds = SpeedLimits(tmp_path, "train", augment=True)
    item = ds[0]
    assert item["x_high"].shape == (3, 960, 1280) and item["x_high"].dtype == torch.float32
    assert item["x_low"].shape == (3, 288, 384) and item["y"] == 2
    torch.testing.assert_close(item["x_low"], resize_bilinear(item["x_high"], (288, 384), "asymmetric"))


AUGS = [ImageLinearTransform(), ImagePan(10)]  # pan scaled down to the 60x80 fixture


def test_augmentation_is_deterministic_per_seed_epoch_index(root):
    a = make(root, "train", seed=3, augmentations=AUGS)
    b = make(root, "train", seed=3, augmentations=AUGS)
    for i in range(len(a)):
        assert torch.equal(a[i]["x_high"], b[i]["x_high"])
        assert a[i]["x_high"].dtype == torch.float32  # every item of an augmenting dataset
    plain = make(root, "train", augment=False)
    changed = [not torch.equal(a[i]["x_high"], as_float_image(plain[i]["x_high"])) for i in range(len(a))]
    assert sum(changed) >= 4  # P(unchanged) = 0.2 * 0.2 per item
    first = [a[i]["x_high"] for i in range(len(a))]
    a.set_epoch(1)
    assert any(not torch.equal(a[i]["x_high"], first[i]) for i in range(len(a)))
    a.set_epoch(0)
    assert all(torch.equal(a[i]["x_high"], first[i]) for i in range(len(a)))
    c = make(root, "train", seed=4, augmentations=AUGS)
    assert any(not torch.equal(c[i]["x_high"], first[i]) for i in range(len(a)))


def test_augmentation_off_by_default_for_test_split(root):
    test = make(root, "test")
    assert not test.augment and test[1]["x_high"].dtype == torch.uint8
    assert make(root, "train").augment


def test_fixed_affine_gives_the_exact_result(root):
    aug = make(root, "train", augmentations=[ImageLinearTransform((1.15, 1.15), (-0.05, -0.05), p=1.0)])
    plain = make(root, "train", augment=False)
    for i in (0, 5):
        expected = as_float_image(plain[i]["x_high"]) * 1.15 + (-0.05)
        assert torch.equal(aug[i]["x_high"], expected)
        assert aug[i]["x_high"].max() > 1.09  # no clipping: the white corner maps to 1.1
    # x_low comes from the augmented image.
    torch.testing.assert_close(aug[0]["x_low"], resize_bilinear(aug[0]["x_high"], LOW, "asymmetric"))


def test_pan_zeroes_the_border_it_uncovers(root):
    pan_only = ImagePan(10, p=1.0)
    ds = make(root, "train", seed=11, augmentations=[pan_only])
    plain = make(root, "train", augment=False)
    seen_signs = set()
    for i in range(len(ds)):
        dy, dx = pan_only.sample(item_rng(11, 0, i))
        x = ds[i]["x_high"]
        assert torch.equal(x, pan(as_float_image(plain[i]["x_high"]), dy, dx))
        rows = slice(max(dy, 0), SIZE[0] + min(dy, 0))  # the rows the vertical shift did not uncover
        if dx > 0:
            assert (x[..., :dx] == 0).all() and (x[:, rows, dx] > 0).all()
        elif dx < 0:
            assert (x[..., dx:] == 0).all() and (x[:, rows, dx - 1] > 0).all()
        if dy > 0:
            assert (x[:, :dy] == 0).all()
        elif dy < 0:
            assert (x[:, dy:] == 0).all()
        seen_signs.add((np.sign(dy), np.sign(dx)))
        torch.testing.assert_close(ds[i]["x_low"], resize_bilinear(x, LOW, "asymmetric"))
    assert {s[1] for s in seen_signs} >= {-1, 1}  # both left and right borders were exercised


def test_dataloader_workers_do_not_change_the_data(root):
    ds = make(root, "train", seed=5, augmentations=AUGS)
    ds.set_epoch(2)
    direct = torch.stack([ds[i]["x_high"] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    assert torch.equal(torch.cat([b["x_high"] for b in batches]), direct)
    assert torch.cat([b["y"] for b in batches]).tolist() == ds.targets.tolist()
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(ds)))


def test_cache_keeps_decoded_images(root):
    ds = make(root, "train", augment=False, cache=True)
    first = ds[2]["x_high"]
    (root / "Set1" / ds.paths[2].name).unlink()
    assert torch.equal(ds[2]["x_high"], first)
    with pytest.warns(UserWarning, match="1 missing image"):
        nocache = make(root, "train", augment=False, check_images=False, missing="skip")
    assert len(nocache) == 6


def test_index_errors(root):
    ds = make(root, "train", augment=False)
    assert ds[-1]["index"] == 6
    with pytest.raises(IndexError, match="out of range"):
        ds[7]


# --------------------------------------------------------------------------- the real data, if present


def test_real_data_counts(real_root):
    root = real_root(find_root, "Swedish Traffic Signs")
    train = SpeedLimits(root, "train", augment=False)
    test = SpeedLimits(root, "test")
    assert (len(train), len(test)) == (EXPECTED_COUNTS["train"], EXPECTED_COUNTS["test"]) == (747, 684)
    item = train[0]
    assert item["x_high"].shape == (3, 960, 1280) and item["x_low"].shape == (3, 288, 384)
    assert set(train.targets.tolist()) == set(range(len(CLASSES)))
