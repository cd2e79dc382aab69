"""The colon-cancer data layer on small fixtures written in CRCHistoPhenotypes' on-disk format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from ats.data.transforms import (
    ColorJitter,
    RandomDihedral,
    as_float_image,
    dihedral,
    item_rng,
    resize_bilinear,
)
from tasks.colon_cancer import (
    ColonCancer,
    find_root,
    k_fold_split,
    read_label,
    scan_images,
)

SIZE = (20, 20)  # (H, W) of the fixture images; the real ones are 500x500
LOW = (4, 4)  # scaled_size(SIZE, 0.2)
# Epithelial nuclei per image img1..img10: label = count > 0 -> 6 positives, 4 negatives.
N_NUCLEI = [3, 0, 1, 5, 0, 2, 0, 4, 1, 0]
LABELS = [int(n > 0) for n in N_NUCLEI]


def write_image(folder: Path, n: int, nuclei: int, size: tuple[int, int] = SIZE) -> None:
    d = folder / f"img{n}"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / f"img{n}.bmp")
    savemat(d / f"img{n}_epithelial.mat", {"detection": rng.uniform(0, 500, (nuclei, 2))})


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    for n, k in enumerate(N_NUCLEI, start=1):
        write_image(tmp_path, n, k)
    return tmp_path


def make(root: Path, split: str = "train", **kwargs) -> ColonCancer:
    kwargs.setdefault("image_size", SIZE)
    kwargs.setdefault("n_images", len(N_NUCLEI))
    return ColonCancer(root, split, **kwargs)


# --------------------------------------------------------------------------- labels and files


def test_labels_from_epithelial_detections(root):
    assert [read_label(root / f"img{n}" / f"img{n}_epithelial.mat") for n in range(1, 11)] == LABELS
    ds = make(root, "all")
    assert ds.numbers == list(range(1, 11))
    assert ds.targets.tolist() == LABELS and ds.class_counts.tolist() == [4, 6]


def test_empty_matlab_array_is_label_zero(tmp_path):
    savemat(tmp_path / "a.mat", {"detection": np.zeros((0, 0))})
    assert read_label(tmp_path / "a.mat") == 0
    savemat(tmp_path / "b.mat", {"other": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"b\.mat has no 'detection' variable \(found \['other'\]\)"):
        read_label(tmp_path / "b.mat")
    (tmp_path / "c.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match=r"cannot read MATLAB file .*c\.mat"):
        read_label(tmp_path / "c.mat")


def test_missing_mat_file_names_it(root):
    (root / "img4" / "img4_epithelial.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"img4_epithelial\.mat"):
        make(root)


def test_detection_folder_gets_a_hint(root):
    mat = root / "img4" / "img4_epithelial.mat"
    mat.rename(root / "img4" / "img4_detection.mat")
    with pytest.raises(FileNotFoundError, match="Classification folder"):
        make(root)


def test_missing_bmp_and_missing_folder_name_them(root):
    (root / "img7" / "img7.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"img7\.bmp"):
        make(root)
    shutil.rmtree(root / "img7")
    with pytest.raises(FileNotFoundError, match=r"1 image folder\(s\) missing .*: img7\b"):
        make(root)
    # n_images=None accepts img1..imgM without gaps only.
    with pytest.raises(FileNotFoundError, match="img7"):
        make(root, n_images=None)
    with pytest.raises(FileNotFoundError, match=r"img11\b"):
        make(root, n_images=11)


def test_wrong_image_size_names_the_file(root):
    write_image(root, 3, 1, size=(20, 21))
    with pytest.raises(ValueError, match=r"expected 20x20 HxW pixels\): \S*img3\.bmp is 20x21"):
        make(root)


def test_accepts_the_zip_layout(tmp_path, root, monkeypatch):
    zipped = tmp_path / "dl" / "CRCHistoPhenotypes_2016_04_28" / "Classification"
    zipped.parent.mkdir(parents=True)
    shutil.copytree(root, zipped, ignore=shutil.ignore_patterns("dl"))
    ds = make(tmp_path / "dl", "all")
    assert ds.root == zipped and ds.targets.tolist() == LABELS
    monkeypatch.delenv("ATS_DATA_DIR", raising=False)
    assert find_root(tmp_path / "dl") == zipped
    with pytest.raises(FileNotFoundError, match="CRCHistoPhenotypes_2016_04_28"):
        find_root(tmp_path / "dl" / "CRCHistoPhenotypes_2016_04_28" / "Classification" / "img1")


# --------------------------------------------------------------------------- folds


@pytest.mark.parametrize("stratified", [True, False])
def test_k_fold_split_partitions(stratified):
    labels = np.array([1] * 51 + [0] * 49)
    tests = []
    for fold in range(5):
        train, test = k_fold_split(100, 5, fold, seed=0, labels=labels if stratified else None)
        assert sorted(train + test) == list(range(100)) and not set(train) & set(test)
        assert len(test) == 20 and train == sorted(train) and test == sorted(test)
        if stratified:
            assert int(labels[test].sum()) in (10, 11)  # 51 positives over 5 folds
        tests.append(test)
    assert sorted(sum(tests, [])) == list(range(100))  # the test folds cover everything once


def test_k_fold_split_deterministic_and_seeded():
    labels = [0, 1] * 10
    assert k_fold_split(20, 4, 2, 7, labels) == k_fold_split(20, 4, 2, 7, labels)
    assert k_fold_split(20, 4, 2, 7, labels) != k_fold_split(20, 4, 2, 8, labels)
    assert k_fold_split(20, 4, 2, 7) == k_fold_split(20, 4, 2, 7)


def test_k_fold_split_uneven_sizes_and_stratification():
    labels = np.array([0] * 7 + [1] * 6)
    sizes, per_class = [], []
    for fold in range(3):
        _, test = k_fold_split(13, 3, fold, seed=1, labels=labels)
        sizes.append(len(test))
        per_class.append(np.bincount(labels[test], minlength=2).tolist())
    assert sorted(sizes) == [4, 4, 5]
    assert sorted(c[0] for c in per_class) == [2, 2, 3] and [c[1] for c in per_class] == [2, 2, 2]


def test_k_fold_split_errors():
    with pytest.raises(ValueError, match="fold must be"):
        k_fold_split(10, 5, 5)
    with pytest.raises(ValueError, match="k must be"):
        k_fold_split(10, 1, 0)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        k_fold_split(10, 2, 0, labels=[0, 1, 0])


def test_datasets_of_a_fold_are_disjoint_and_cover(root):
    seen = []
    for fold in range(5):
        train = make(root, "train", fold=fold, augment=False)
        test = make(root, "test", fold=fold)
        assert sorted(train.numbers + test.numbers) == list(range(1, 11))
        assert not set(train.numbers) & set(test.numbers)
        assert test.targets.tolist() == [LABELS[n - 1] for n in test.numbers]
        assert test.class_counts.tolist() in ([0, 2], [1, 1], [2, 0]) and len(test) == 2
        seen += test.numbers
    assert sorted(seen) == list(range(1, 11))
    # 6 positives / 4 negatives dealt round-robin: every fold holds 1 or 2 positives.
    assert all(1 <= make(root, "test", fold=f).class_counts[1] <= 2 for f in range(5))


# --------------------------------------------------------------------------- items and augmentation


def test_item_without_augmentation(root):
    ds = make(root, "test", fold=1)
    assert not ds.augment
    item = ds[0]
    n = ds.numbers[0]
    raw = np.array(Image.open(root / f"img{n}" / f"img{n}.bmp"))
    assert item["x_high"].dtype == torch.uint8
    assert torch.equal(item["x_high"], torch.from_numpy(raw).permute(2, 0, 1))
    assert item["x_low"].shape == (3, *LOW) and item["x_low"].dtype == torch.float32
    # half-pixel coordinates at factor 5 pick the pixel centres 2, 7, 12, 17.
    torch.testing.assert_close(item["x_low"], as_float_image(item["x_high"])[:, 2::5, 2::5])
    assert item["y"] == LABELS[n - 1] and item["index"] == 0


def test_real_size_gives_a_100x100_low_view(tmp_path):
    write_image(tmp_path, 1, 2, size=(500, 500))
    ds = ColonCancer(tmp_path, "all", n_images=1)
    item = ds[0]
    assert item["x_high"].shape == (3, 500, 500) and item["x_low"].shape == (3, 100, 100) and item["y"] == 1


def test_augmentation_deterministic_and_consistent(root):
    a, b = make(root, "train", seed=2), make(root, "train", seed=2)
    assert a.augment
    plain = make(root, "train", augment=False)
    first = []
    for i in range(len(a)):
        x = a[i]["x_high"]
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, b[i]["x_high"])
        assert not torch.equal(x, as_float_image(plain[i]["x_high"]))
        torch.testing.assert_close(a[i]["x_low"], resize_bilinear(x, LOW, "half_pixel"))
        first.append(x)
    a.set_epoch(3)
    assert all(not torch.equal(a[i]["x_high"], first[i]) for i in range(len(a)))


def test_geometric_augmentation_alone_is_an_exact_dihedral(root):
    ds = make(root, "train", seed=4, augmentations=[RandomDihedral()])
    plain = make(root, "train", augment=False)
    ks = []
    for i in range(len(ds)):
        k = int(item_rng(4, 0, i).integers(8))
        assert torch.equal(ds[i]["x_high"], dihedral(as_float_image(plain[i]["x_high"]), k))
        ks.append(k)
    assert len(set(ks)) > 1


def test_colour_jitter_keeps_the_geometry(root):
    # Brightness only: every pixel is scaled by the same factor in [0.9, 1.1] (before clipping).
    ds = make(root, "train", seed=1, augmentations=[ColorJitter(0.1, 0, 0, 0)])
    plain = make(root, "train", augment=False)
    x, raw = ds[0]["x_high"], as_float_image(plain[0]["x_high"])
    inside = (raw > 0.05) & (raw < 0.85)
    ratio = x[inside] / raw[inside]
    assert 0.9 <= ratio.mean().item() <= 1.1
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio.mean().item()), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- the real data, if present


def test_real_data(real_root):
    root = real_root(find_root, "CRCHistoPhenotypes")
    numbers, _, _ = scan_images(root)
    assert numbers == list(range(1, 101))
    everything = ColonCancer(root, "all")
    assert len(everything) == 100 and 0 < everything.targets.sum() < 100
    test = ColonCancer(root, "test", fold=0)
    assert len(test) == 20
    item = test[0]
    assert item["x_high"].shape == (3, 500, 500) and item["x_low"].shape == (3, 100, 100)
