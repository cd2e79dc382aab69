"""Run configuration: defaults < preset < overrides, typed --set values."""

from __future__ import annotations

import pytest

from ats.registry import task as task_registry
from ats.train.config import RunConfig, apply_overrides, parse_assignment


def test_task_defaults_are_the_papers_and_presets_override_them():
    task = task_registry.build("mega_mnist")
    paper = task.config()
    assert (paper.n_patches, paper.patch_size, paper.batch_size, paper.epochs) == (10, 50, 128, 500)
    assert (paper.lr, paper.clip_norm, paper.entropy, paper.smoothing) == (1e-3, 1.0, 1e-4, 1e-5)
    assert paper.adam_eps == 1e-7 and paper.sampler == "without_replacement"
    assert (paper.data["width"], paper.data["scale"], paper.data["noise"]) == (1500, 0.12, True)
    easy = task.config("easy")
    assert (easy.data["width"], easy.data["scale"], easy.data["noise"]) == (500, 0.2, False)
    assert easy.preset == "easy" and easy.n_patches == 10


@pytest.mark.parametrize("text,key,value", [
    ("lr=3e-4", "lr", 3e-4),
    ("epochs=7", "epochs", 7),
    ("clip_norm=none", "clip_norm", None),
    ("clip_norm=2", "clip_norm", 2.0),
    ("data.noise=false", "noise", False),
    ("noise=yes", "noise", True),
    ("lr_decay_at=(250, 400)", "lr_decay_at", (250, 400)),
    ("lr_decay_at=250", "lr_decay_at", (250,)),
    ("patch_size=(30, 40)", "patch_size", (30, 40)),
    ("sampler=with_replacement", "sampler", "with_replacement"),
    ("eval_topk=1", "eval_topk", True),
])
def test_set_values_are_parsed_to_the_type_of_the_default(text, key, value):
    config = task_registry.build("mega_mnist").config()
    updated = apply_overrides(config, dict([parse_assignment(text)]), parse=True)
    actual = updated.data[key] if key in updated.data and key not in ("epochs",) and \
        not hasattr(updated, key) else getattr(updated, key)
    assert actual == value and type(actual) is type(value)


@pytest.mark.parametrize("text,message", [
    ("epochs=1.5", "epochs expects an integer"),
    ("noise=maybe", "noise expects true or false"),
    ("data.colour=red", "unknown task data option 'colour'"),
    ("bogus=1", "unknown setting 'bogus'"),
])
def test_bad_values_name_the_setting(text, message):
    config = task_registry.build("mega_mnist").config()
    with pytest.raises(ValueError, match=message):
        apply_overrides(config, dict([parse_assignment(text)]), parse=True)


def test_round_trip_through_json():
    config = task_registry.build("mega_mnist").config("smoke", lr_decay_at=(3,), patch_size=(20, 30))
    import json

    again = RunConfig.from_dict(json.loads(config.to_json()))
    assert again == config
