"""Run configuration: defaults < preset < overrides, typed --set values."""

from __future__ import annotations

import pytest

from ats.config import RunConfig, apply_overrides, parse_assignment
from ats.registry import task as task_registry


def test_task_defaults_are_the_papers_and_presets_override_them():
    task = task_registry.build("mega_mnist")
    paper = task.config("original")  # the default differs in its recipe only (batch 32, ...)
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


# -- parsing by annotation, checks by bounds ----------------------------------------

from typing import Literal  # noqa: E402

from ats.config import RESUMABLE, parse_value, resumed_config  # noqa: E402


@pytest.mark.parametrize("raw,annotation,value", [
    ("3", int, 3),
    ("-2", int, -2),
    ("0.5", float, 0.5),
    ("2", float, 2.0),
    ("off", bool, False),
    ("adam", Literal["adam", "sgd"], "adam"),
    ("none", float | None, None),
    ("1.5", float | None, 1.5),
    ("32x48", int | tuple[int, ...], (32, 48)),
    ("[1, 2, 3]", tuple[int, ...], (1, 2, 3)),
    ("()", tuple[int, ...], ()),
    ("7", int | None, 7),
])
def test_values_are_parsed_by_their_annotation(raw, annotation, value):
    parsed = parse_value("x", raw, annotation)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("raw,annotation,message", [
    ("abc", float, "x expects a number, got 'abc'"),
    ("True", float, "x expects a number, got 'True'"),
    ("none", float, "x expects a number, got 'none'"),
    ("nan", float, "x expects a number"),
    ("1.5", int, "x expects an integer"),
    ("rmsprop", Literal["adam", "sgd"], "x expects 'adam' or 'sgd', got 'rmsprop'"),
    ("1,a", tuple[int, ...], r"x expects a tuple of integers like \(1, 2\), got '1,a'"),
])
def test_unparsable_values_name_the_setting_and_the_type(raw, annotation, message):
    with pytest.raises(ValueError, match=message):
        parse_value("x", raw, annotation)


@pytest.mark.parametrize("text,message", [
    ("lr=abc", "lr expects a number, got 'abc'"),
    ("lr=none", "lr expects a number"),
    ("lr=True", "lr expects a number"),
    ("lr=0", "lr must be positive, got 0.0"),
    ("momentum=abc", "momentum expects a number"),
    ("smoothing=1", r"smoothing must be >= 0 and < 1, got 1.0"),
    ("clip_norm=-1", "clip_norm must be positive"),
    ("entropy=abc", "entropy expects a number"),
    ("lr_decay=abc", "lr_decay expects a number"),
    ("lr_decay_at=(0, 3)", r"lr_decay_at must be a positive integer \(every element\)"),
    ("patch_size=(30, 0)", r"patch_size must be a positive integer \(every element\)"),
    ("optimizer=rmsprop", "optimizer expects 'adam' or 'sgd'"),
    ("wor_grad=biased", "wor_grad expects 'unbiased' or 'original'"),
    ("workers=-1", "workers must be >= 0"),
    ("data.noise=maybe", "data.noise expects a number"),
])
def test_every_setting_is_checked_before_anything_runs(text, message):
    task = task_registry.build("find_pattern")
    with pytest.raises(ValueError, match=message):
        task.override(task.config(), dict([parse_assignment(text)]), parse=True)


def test_typed_values_from_python_are_checked_too():
    task = task_registry.build("find_pattern")
    with pytest.raises(ValueError, match="lr expects a number, got 'fast'"):
        task.config(lr="fast")
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        RunConfig(epochs=0)
    with pytest.raises(ValueError, match=r"data.cell must be >= 8"):
        task.check_config(task.config(**{"data.cell": 4}))


def test_resume_rules_live_with_the_configuration():
    saved = task_registry.build("find_pattern").config(output="/old/place")
    resumed = resumed_config(saved, {"epochs": 20, "output": "/new/place", "device": "cpu"})
    assert (resumed.epochs, resumed.output, resumed.device) == (20, "/new/place", "cpu")
    assert {"epochs", "output"} <= RESUMABLE
    with pytest.raises(ValueError, match="cannot change lr, n_patches when resuming"):
        resumed_config(saved, {"n_patches": 4, "lr": 0.1, "epochs": 3})
    with pytest.raises(ValueError, match="cannot change data.noise when resuming"):
        resumed_config(saved, {"data": {**saved.data, "noise": 0.1}})
    # unchanged values are not changes
    assert resumed_config(saved, {"n_patches": saved.n_patches}) == saved
