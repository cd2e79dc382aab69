"""``ats-bench sources`` and ``ats-bench step`` on small inputs: every row is
measured, the files are written where asked and removed when temporary."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from ats.bench.extract_limits import Workload
from ats.bench.sources import run_sources_benchmark, slide_like
from ats.bench.step import PHASES, run_step_benchmark
from ats.cli import bench_main
from ats.sources import open_source
from tests.tasks.test_images import make_dataset

TINY = Workload("tiny", (1, 3, 700, 900), "uint8", 12, (64, 64), "for tests")


def test_sources_bench_reads_every_format_and_keeps_the_files_asked_for(tmp_path):
    r = run_sources_benchmark(TINY, repeats=2, folder=tmp_path / "files")
    assert set(r["rows"]) == {"ram", "memmap_warm", "memmap_cold", "tiff_warm", "tiff_cold",
                              "tiff_cached", "strided_read"}
    for row in r["rows"].values():
        assert len(row["times_ms"]) == 2 and row["ms"] > 0
        assert row["patches_per_second"] == 12 / (row["ms"] / 1e3)
    assert r["rows"]["strided_read"]["fraction_of_strided_read"] == 1.0
    tiff = open_source(tmp_path / "files" / "image.tif")
    assert tiff.shape == (3, 700, 900) and tiff.levels == 2  # 700x900, then 350x450
    assert np.array_equal(np.load(tmp_path / "files" / "image.npy")[:, :5],
                          slide_like((3, 700, 900), 0, 700, 0)[:, :5])  # made in one band
    assert r["files"]["tiff"]["compression_ratio"] > 1.2  # structured, compressible pixels


def test_step_bench_splits_the_step_into_its_phases(tmp_path):
    root = make_dataset(tmp_path / "data", n=8)
    r = run_step_benchmark(str(root), steps=2, options={"batch_size": 2, "n_patches": 3,
                                                        "patch_size": 24},
                           sets=("data.low_size=32", "feature=small_cnn", "attention=small_cnn"))
    for label in ("first epoch", "second epoch"):
        phases = r["passes"][label]
        assert set(phases) == set(PHASES)
        step = phases["step"]["seconds"]
        for i in range(2):  # the parts add up to the step
            parts = sum(phases[p]["seconds"][i] for p in PHASES if p != "step")
            assert abs(parts - step[i]) < 1e-6 * max(1.0, step[i]) + 1e-9
        assert all(v > 0 for v in phases["reading patches"]["seconds"])
    result = CliRunner().invoke(bench_main, ["step", "--data-dir", str(root), "--steps", "1",
                                             "--batch-size", "2", "--patch-size", "24",
                                             "--set", "data.low_size=32", "--json",
                                             str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "reading patches" in result.output
    assert set(json.loads((tmp_path / "r.json").read_text())["passes"]) == {"first epoch",
                                                                           "second epoch"}
