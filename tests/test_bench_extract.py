"""``ats-bench extract`` runs end to end on the tiny ``smoke`` workload."""

from __future__ import annotations

import json
import math

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
    assert set(smoke["diagnostics"]) == {"first_touch", "numba_reused_out"}
    for entry in smoke["diagnostics"].values():
        assert entry["ms"] > 0 and entry["gbps"] > 0
    for entry in smoke["backends"].values():
        assert entry["speedup_vs_reference"] > 0
    assert smoke["backends"]["reference"]["speedup_vs_reference"] == 1.0
    assert smoke["numba_fraction_of_strided_read"] > 0
    assert smoke["numba_reused_out_fraction_of_strided_read"] > 0
    assert smoke["torch_cpu_over_numba"] > 0


def test_unknown_workload_is_a_usage_error():
    result = CliRunner().invoke(extract_command, ["--workload", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
