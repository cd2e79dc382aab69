"""The model plugins (ats/models.py, ats/plugins/models/): every task trains
``--model ats|dps|ips|cnn_low|cnn_full``, a model's options live in
``config.method`` typed by its dataclass, and DPS and IPS run end to end."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ats.cli import plugins_main, run_main
from ats.plugins.models.dps import DPSClassifier
from ats.plugins.networks.small import SmallAttention, SmallFeature
from ats.task import configure

TINY = ["--set", "data.n_train=40", "--set", "data.n_test=20", "--batch-size", "10",
        "--epochs", "1", "--no-progress", "--set", "pictures=2"]


@pytest.mark.parametrize("model", ["dps", "ips"])
def test_ats_run_trains_dps_and_ips_end_to_end(tmp_path, model):
    out = tmp_path / model
    result = CliRunner().invoke(run_main, ["--task", "find_pattern", "--model", model,
                                           "--output", str(out), *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["model"] == model and summary["final_test_error"] is not None
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == configure("find_pattern", options={"model": model})[1].method
    assert (out / "pictures" / "epoch0001_attention.png").stat().st_size > 0
    # the method's options may not change on resume; naming the option
    again = CliRunner().invoke(run_main, ["--task", "find_pattern", "--resume", "--output",
                                          str(out), "--set", "method.dropout=0.3"
                                          if model == "ips" else "method.sigma=0.3"])
    assert again.exit_code != 0
    assert ("method.dropout" if model == "ips" else "method.sigma") in again.output


def test_the_options_follow_the_model_and_are_typed_by_its_dataclass():
    _, dps = configure("find_pattern", options={"model": "dps"},
                       sets=["method.sigma=0.2", "method.k=2"])
    assert dps.method["sigma"] == 0.2 and dps.method["k"] == 2
    assert dps.method["n_samples"] == 500  # the published default, recorded
    _, ips = configure("find_pattern", options={"model": "ips"}, sets=["method.memory=4"])
    assert ips.method["memory"] == 4 and ips.method["chunk"] == 100
    _, ats = configure("find_pattern")
    assert ats.method == {}
    # a task's own defaults of a model's options (IPS's traffic-sign settings)
    _, traffic = configure("speed_limits", options={"model": "ips"})
    assert (traffic.method["memory"], traffic.method["chunk"], traffic.method["d_model"]) == \
        (10, 32, 512)
    # switching the model drops the other model's options
    task, config = configure("find_pattern", options={"model": "dps"})
    assert task.override(config, {"model": "ips"}).method == ips.method | {"memory": 5}


@pytest.mark.parametrize("model, sets, message", [
    ("dps", ["method.sigma=0"], "method.sigma must be positive, got 0.0"),
    ("dps", ["method.sigma=abc"], "method.sigma expects a number, got 'abc'"),
    ("dps", ["method.sigma_decay=cosine"], "method.sigma_decay expects 'none' or 'linear'"),
    ("dps", ["method.sigmaa=1"], r"unknown option 'method.sigmaa' of model 'dps'; its "
                                 r"options: method.k, method.n_samples"),
    ("ips", ["method.memory=0"], "method.memory must be a positive integer, got 0"),
    ("ips", ["method.dropout=1"], r"method.dropout must be >= 0 and < 1, got 1.0"),
    ("ats", ["method.sigma=0.1"], r"unknown option 'method.sigma' of model 'ats'; its "
                                  r"options: \(none\)"),
])
def test_bad_options_name_the_option(model, sets, message):
    with pytest.raises(ValueError, match=message):
        configure("find_pattern", options={"model": model}, sets=sets)


def test_options_that_do_not_fit_the_images_are_refused_before_training():
    task, config = configure("find_pattern", options={"model": "dps"}, sets=["method.k=65"])
    with pytest.raises(ValueError, match=r"method.k=65 is larger than the 64 DPS candidates"):
        task.build_model(config).check_input_shapes(*task.input_shapes(config))
    task, config = configure("find_pattern", options={"model": "ips"},
                             sets=["patch_size=200"])
    with pytest.raises(ValueError, match=r"patch \(200, 200\) is larger than the image"):
        task.build_model(config).check_input_shapes(*task.input_shapes(config))


def test_ats_plugins_lists_the_models():
    result = CliRunner().invoke(plugins_main, ["model"])
    assert result.exit_code == 0
    for name in ("ats", "dps", "ips", "cnn_low", "cnn_full"):
        assert f"  {name} " in result.output


# -- DPS -------------------------------------------------------------------------------


def _dps(**kwargs):
    torch.manual_seed(0)
    options = {"num_classes": 4, "k": 3, "patch_size": 16, "n_samples": 50, **kwargs}
    return DPSClassifier(SmallAttention(), SmallFeature(), **options)


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.rand(2, 1, 16, 16, generator=g),
            torch.randint(0, 256, (2, 1, 128, 128), generator=g, dtype=torch.uint8))


def test_dps_trains_its_scorer_through_the_perturbed_top_k():
    model = _dps()
    x_low, x_high = _inputs()
    out = model(x_low, x_high, generator=torch.Generator().manual_seed(2))
    out.logits.sum().backward()
    scorer_grad = sum(float(p.grad.abs().sum()) for p in model.scorer.parameters())
    assert scorer_grad > 0
    assert out.selection.patches.shape == (2, 3, 1, 16, 16)
    assert out.selection.scores.shape == (2, 8, 8)  # 16x16 map pooled by 2: one patch each
    # the offsets are those of the three best candidates: centred in their cells
    cells = out.selection.scores.flatten(1).topk(3).indices.sort().values
    expected = torch.stack([cells // 8, cells % 8], -1) * 16
    assert torch.equal(out.selection.offsets, expected)


def test_dps_evaluates_the_hard_top_k_and_decays_sigma():
    model = _dps(sigma=0.1, epochs=4)
    x_low, x_high = _inputs()
    model.eval()
    a = model(x_low, x_high, generator=torch.Generator().manual_seed(3)).logits
    b = model(x_low, x_high, generator=torch.Generator().manual_seed(4)).logits
    assert torch.equal(a, b) and model.stochastic is False
    assert torch.allclose(model(x_low, x_high).selection.weights, torch.ones(2, 3))
    sigmas = []
    for epoch in (1, 2, 4, 9):
        model.set_epoch(epoch)
        sigmas.append(model.current_sigma)
    assert sigmas == pytest.approx([0.1, 0.075, 0.025, 0.025])
