"""``ats-bench convs``: FLOP counts, and rates computed from the timed calls."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ats.bench import convs
from ats.cli import bench_main
from ats.plugins.networks.mnist import MNISTFeature


def test_flops_of_the_megapixel_mnist_feature_network_on_a_50_pixel_patch():
    layers = convs.conv_layers(MNISTFeature(), (1, 50, 50))
    # 7x7 conv 1->32 to 44x44, then three 3x3 convs 32->32 to 42, 40 and 38
    expected = [2 * 44 * 44 * 32 * 1 * 49, 2 * 42 * 42 * 32 * 32 * 9,
                2 * 40 * 40 * 32 * 32 * 9, 2 * 38 * 38 * 32 * 32 * 9]
    assert [layer["flops"] for layer in layers] == expected
    assert [layer["input_shape"] for layer in layers] == [(1, 50, 50), (32, 44, 44),
                                                         (32, 42, 42), (32, 40, 40)]


class _FakeClock:
    """Every timed call lasts ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.reads = 0.0, step, 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:  # the second read of a pair ends a call
            self.now += self.step
        return self.now


def test_rates_are_flops_over_the_timed_seconds():
    net = MNISTFeature()
    result = convs.measure_convs(net, (1, 50, 50), patches=2, repeats=3,
                                 clock=_FakeClock(0.5))
    per_patch = sum(layer["flops"] for layer in convs.conv_layers(net, (1, 50, 50)))
    for layout in convs.LAYOUTS:
        network = result["network"][layout]
        assert network["forward_gflops"] == pytest.approx(2 * per_patch / 0.5 / 1e9)
        assert network["train_gflops"] == pytest.approx(3 * 2 * per_patch / 0.5 / 1e9)
        # four layers of 0.5 s alone against 0.5 s for the whole network
        assert network["network_over_kernels"] == pytest.approx(4.0)
    assert result["channels_last_speedup"]["forward"] == pytest.approx(1.0)


def test_the_command_measures_both_layouts_and_writes_json(tmp_path):
    path = tmp_path / "convs.json"
    result = CliRunner().invoke(bench_main, [
        "convs", "--task", "find_pattern", "--batch-size", "2", "--repeats", "1",
        "--json", str(path)])
    assert result.exit_code == 0, result.output
    payload = json.loads(path.read_text())
    assert set(payload["network"]) == set(convs.LAYOUTS)
    assert len(payload["layers"]) >= 1 and payload["layers"][0]["channels_last_gflops"] > 0
    assert "channels_last over contiguous" in result.output


@pytest.mark.parametrize("args, message", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--task", "find_pattern", "--set", "lr=x"], "lr expects a number, got 'x'"),
    (["--task", "find_pattern", "--repeats", "0"], "--repeats"),
])
def test_bad_input_is_one_clear_line(args, message):
    result = CliRunner().invoke(bench_main, ["convs", *args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output
