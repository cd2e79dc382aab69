"""``ats-bench extract`` runs end to end on the tiny ``smoke`` workload."""

from __future__ import annotations

import json
import math

import torch
from click.testing import CliRunner

from ats.bench.extract import WORKLOADS, extract_command


def test_smoke_workload_json():
    result = CliRunner().invoke(
        extract_command, ["--workload", "smoke", "--repeats", "1", "--evict-mb", "64", "--json", "-"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)

    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["llc_bytes"] > 0 and machine["cpu"]
    assert data["settings"]["repeats"] == 1
    assert data["settings"]["evict_bytes"] == 64 << 20

    smoke = data["workloads"]["smoke"]
    w = WORKLOADS["smoke"]
    assert smoke["patch_bytes"] == 2 * 4 * 3 * 8 * 6 * 4 == w.patch_bytes
    assert set(smoke["backends"]) >= {"reference", "numba", "torch"}
    for entry in [*smoke["backends"].values(), *smoke["limits"].values()]:
        for key in ("ms", "gbps"):
            assert isinstance(entry[key], float) and math.isfinite(entry[key]) and entry[key] > 0
        # the rate is the patch bytes over the median time
        assert math.isclose(entry["gbps"], w.patch_bytes / entry["ms"] / 1e6)
    assert set(smoke["limits"]) == {"memcpy", "strided_read"}
    assert set(smoke["diagnostics"]) == {"first_touch", "numba_reused_out", "numba_fresh_memory"}
    for entry in smoke["diagnostics"].values():
        assert entry["ms"] > 0 and entry["gbps"] > 0
    for entry in [*smoke["backends"].values(), *smoke["limits"].values(),
                  *smoke["diagnostics"].values()]:
        lo, hi = entry["iqr_ms"]
        assert min(entry["times_ms"]) <= lo <= hi <= max(entry["times_ms"])
        assert entry["faults"] >= 0 and len(entry["times_ms"]) == entry["repeats"] == 1
    for entry in smoke["backends"].values():
        assert entry["speedup_vs_reference"] > 0
    assert smoke["backends"]["reference"]["speedup_vs_reference"] == 1.0
    assert smoke["numba_fraction_of_strided_read"] > 0
    assert smoke["numba_reused_out_fraction_of_strided_read"] > 0
    assert smoke["torch_cpu_over_numba"] > 0
    for key in ("numba_fraction_of_strided_read", "numba_reused_out_fraction_of_strided_read",
                "numba_fresh_memory_fraction_of_strided_read", "torch_cpu_over_numba"):
        lo, hi = smoke[key + "_iqr"]
        assert 0 < lo <= hi  # the spread of the per-round ratios


def test_ratios_and_spreads_from_per_round_times(monkeypatch):
    """Each ratio is the ratio of the medians, its spread the quartiles of the
    per-round ratios; the module's buffer path (PatchBuffers) is what
    numba_reused_out times. A fake clock ticks once per reading, and the
    strided read takes 1 tick more in round 1, 3 more in round 2."""
    import ats.bench.extract as bench

    clock = iter(range(10**6))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    extra = iter([0, 1, 3])  # warm-up, round 1, round 2

    def slow_read(*args):
        for _ in range(next(extra)):
            next(clock)

    monkeypatch.setattr(bench, "strided_read", slow_read)
    calls = []

    class Buffers(bench.PatchBuffers):
        def take(self, *args, **kwargs):
            calls.append(args)
            return super().take(*args, **kwargs)

    monkeypatch.setattr(bench, "PatchBuffers", Buffers)
    r = bench.run_workload(WORKLOADS["smoke"], ["numba", "torch"], repeats=2, evict=lambda: None)
    assert r["limits"]["strided_read"]["times_ms"] == [2000.0, 4000.0]
    assert r["backends"]["numba"]["times_ms"] == [1000.0, 1000.0]
    assert r["numba_fraction_of_strided_read"] == 3.0  # median 3000 / median 1000
    assert r["numba_fraction_of_strided_read_iqr"] == [2.5, 3.5]  # quartiles of (2, 4)
    assert r["torch_cpu_over_numba"] == 1.0 and r["torch_cpu_over_numba_iqr"] == [1.0, 1.0]
    assert calls == [((2, 4, 3, 8, 6), torch.float32)] * 3  # warm-up and two rounds


def test_unknown_workload_is_a_usage_error():
    result = CliRunner().invoke(extract_command, ["--workload", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
