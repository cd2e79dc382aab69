"""The canvas curriculum of Megapixel MNIST: smaller training canvases in the
first epochs, the task's canvas after, the test set never changed."""

from __future__ import annotations

import pytest

import ats.data.mnist
from ats.contracts import set_epoch
from tasks.mega_mnist import MegaMNISTConfig, make_datasets
from tests.tasks.test_mega_mnist_data import synthetic_digits


@pytest.fixture
def fake_mnist(monkeypatch):
    digits = synthetic_digits(60)
    monkeypatch.setattr(ats.data.mnist, "load_mnist",
                        lambda split, data_dir=None, download=True: ats.data.mnist.MNIST(*digits))


def test_stages_keep_the_noise_density_and_the_scale():
    config = MegaMNISTConfig(curriculum=(300, 300, 750))
    small = config.stage(300)
    assert (small.width, small.height, small.scale) == (300, 300, 0.12)
    assert small.n_noise == 2  # 50 per 1500^2 -> 2 per 300^2
    assert config.stage(750).n_noise == 12 and small.curriculum == ()


def test_the_training_canvas_follows_the_schedule(fake_mnist):
    config = MegaMNISTConfig(width=600, height=600, n_train=8, n_test=4, curriculum=(200, 400))
    train, test = make_datasets(config)
    sides = []
    for epoch in (1, 2, 3, 4):
        set_epoch(train, epoch)  # what the engine does before each epoch
        sides.append(train[0]["x_high"].shape[1:])
    assert sides == [(200, 200), (400, 400), (600, 600), (600, 600)]
    assert train[0]["x_low"].shape == (1, 72, 72)  # 600 * 0.12: the task's scale throughout
    assert len(train) == 8 and test[0]["x_high"].shape == (1, 600, 600)


@pytest.mark.parametrize("curriculum,message", [
    ((2000,), "curriculum canvas sides must be integers <= the canvas"),
    ((40,), "must be >= 56 when noise=True"),
])
def test_bad_schedules_are_named(curriculum, message):
    with pytest.raises(ValueError, match=message):
        MegaMNISTConfig(curriculum=curriculum).validate()


def test_the_schedule_is_a_typed_data_option():
    from ats.task import get_task

    task = get_task("mega_mnist")
    config = task.override(task.config(), {"data.curriculum": "300x300x750"}, parse=True)
    assert task.options_of(config).curriculum == (300, 300, 750)


def test_the_default_recipe_and_the_original_one_differ_only_in_the_recipe():
    from ats.task import get_task
    from tasks.mega_mnist.task import CURRICULUM

    task = get_task("mega_mnist")
    default, paper, original = task.config(), task.config("paper"), task.config("original")
    assert (default.batch_size, default.head_gain) == (32, 10.0)
    assert tuple(default.data["curriculum"]) == CURRICULUM
    assert paper.to_dict() == {**default.to_dict(), "preset": "paper"}
    assert (original.batch_size, original.head_gain, original.data["curriculum"]) == (128, 1.0, [])
    recipe = {"batch_size", "head_gain", "preset", "data"}
    assert {k: v for k, v in original.to_dict().items() if k not in recipe} == \
        {k: v for k, v in default.to_dict().items() if k not in recipe}
    assert {**original.data, "curriculum": list(CURRICULUM)} == default.data
    # the original's own settings: scripts/mnist.py of idiap/attention-sampling
    assert (original.epochs, original.lr, original.n_patches, original.patch_size) == \
        (500, 1e-3, 10, 50)


def test_the_smoke_canvas_trains_without_a_curriculum():
    from ats.task import get_task

    config = get_task("mega_mnist").config("smoke")
    assert config.data["curriculum"] == [] and config.batch_size == 8


def test_the_easy_preset_takes_the_recipe_with_the_stages_that_fit_its_canvas():
    from ats.task import get_task
    from tasks.mega_mnist.task import EASY_CURRICULUM

    task = get_task("mega_mnist")
    config = task.config("easy")
    assert (config.batch_size, config.head_gain) == (32, 10.0)
    assert tuple(config.data["curriculum"]) == EASY_CURRICULUM == (200, 200, 300, 300)
    assert (config.data["width"], config.data["noise"]) == (500, False)
    task.options_of(config).validate()  # every stage fits the 500x500 canvas


def test_a_canvas_smaller_than_the_curriculum_says_how_to_turn_it_off():
    from ats.task import get_task

    task = get_task("mega_mnist")
    with pytest.raises(ValueError, match=r"data.curriculum=\(\) trains on the full canvas"):
        task.options_of(task.config(**{"data.width": 600, "data.height": 600}))
