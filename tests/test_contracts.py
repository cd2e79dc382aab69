"""Plugin contracts: a plugin that breaks one fails when it is built, naming
the missing member; the optional members are honoured by the engine."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ats import registry as reg
from ats.contracts import PluginContractError, regularization_terms, set_epoch
from ats.task import get_task


class NoSize(nn.Module):
    """A feature network that forgot `out_features`."""

    def __init__(self, *, in_channels=1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveMaxPool2d(1),
                                 nn.Flatten())

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def registered():
    names = []

    def add(registry, name, obj):
        registry.add(name, obj)
        names.append((registry, name))

    yield add
    for registry, name in names:
        registry.remove(name)


def test_a_feature_network_without_out_features_fails_when_built(registered):
    registered(reg.feature, "no_size", NoSize)
    task = get_task("find_pattern")
    for model in ("ats", "cnn_low"):
        with pytest.raises(PluginContractError, match="no_size.*`out_features`"):
            task.build_model(task.config(feature="no_size", model=model))


def test_an_attention_network_must_be_a_module(registered):
    registered(reg.attention, "not_a_module", lambda in_channels=1: (lambda x: x))
    task = get_task("find_pattern")
    with pytest.raises(PluginContractError, match="not_a_module.*must be a torch.nn.Module"):
        task.build_model(task.config(attention="not_a_module"))


def test_a_sampler_must_be_a_sampler(registered):
    registered(reg.sampler, "not_a_sampler", lambda: object())
    task = get_task("find_pattern")
    with pytest.raises(PluginContractError, match="sampler 'not_a_sampler'.*Sampler"):
        task.build_model(task.config(sampler="not_a_sampler"))


def test_a_task_must_be_a_task(registered):
    registered(reg.task, "not_a_task", object)
    with pytest.raises(PluginContractError, match="task 'not_a_task'.*ats.task.Task"):
        get_task("not_a_task")


def test_regularization_terms_of_submodules_reach_the_loss():
    class Penalised(nn.Linear):
        def regularization(self):
            return self.weight.sum() * 0 + 7.0

    model = nn.Sequential(nn.Linear(2, 2), Penalised(2, 2))
    terms = list(regularization_terms(model))
    assert len(terms) == 1 and float(terms[0].detach()) == 7.0


def test_the_engine_adds_regularization_to_the_loss(tmp_path, registered):
    from ats.train.engine import Trainer

    class Penalised(nn.Module):
        def __init__(self, *, in_channels=1):
            super().__init__()
            self.out_features = 4
            self.net = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveMaxPool2d(1),
                                     nn.Flatten())

        def forward(self, x):
            return self.net(x)

        def regularization(self):
            return torch.tensor(5.0)

    registered(reg.feature, "penalised", Penalised)
    task = get_task("find_pattern")
    config = task.config(**{"feature": "penalised", "data.n_train": 8, "data.n_test": 4,
                            "entropy": 0.0})
    trainer = Trainer(config, task=task, progress=False, log=lambda m: None)
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(4)])
    out, y = trainer._forward(batch)
    plain = torch.nn.functional.cross_entropy(out.logits, y)
    assert trainer.loss(out, y).item() == pytest.approx(plain.item() + 5.0)


def test_set_epoch_reaches_epoch_aware_datasets_only():
    class Aware:
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    aware = Aware()
    set_epoch(aware, 3)
    assert aware.epoch == 3
    set_epoch([1, 2, 3], 4)  # not epoch-aware: left alone
