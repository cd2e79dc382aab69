"""The training engine on the synthetic find_pattern task: outputs, exact
resume, interruption, and settings that must fail before training."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from ats.registry import task as task_registry
from ats.train.data import EpochSampler
from ats.train.engine import Trainer
from tests.train.helpers import SeenItems, make_trainer, weights


def _config(tmp_path, **overrides):
    task = task_registry.build("find_pattern")
    values = {"data.n_train": 200, "data.n_test": 60, "epochs": 2, "batch_size": 40,
              "eval_seeds": 2, "pictures": 2, "output": str(tmp_path / "run")}
    values.update(overrides)
    return task, task.config(**values)


def _trainer(tmp_path, **overrides):
    task, config = _config(tmp_path, **overrides)
    return Trainer(config, task=task, progress=False, log=lambda m: None)


def test_fit_writes_every_output(tmp_path):
    summary = _trainer(tmp_path).fit()
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "summary.json", "curves.png",
                 "pictures/epoch0001_attention.png", "pictures/epoch0002_patches.png"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert 0 <= float(rows[-1]["test_error"]) <= 1 and rows[-1]["test_error_std"] != ""
    saved = json.loads((run / "summary.json").read_text())
    assert saved["epochs"] == 2 and saved["final_test_error"] == summary["final_test_error"]
    assert json.loads((run / "config.json").read_text())["task"] == "find_pattern"
    # nothing temporary is left behind by the atomic writes
    assert not [p for p in run.rglob("*.tmp")]


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_an_interrupted_run_keeps_its_checkpoint_and_resumes(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, epochs=3)
    original = Trainer.train_epoch

    def interrupt_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 1

    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = _trainer(tmp_path, epochs=3)
    resumed.fit(resume=True)
    assert resumed.epoch == 3
    assert len(list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))) == 3


def test_an_existing_run_is_not_overwritten(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        _trainer(tmp_path, epochs=1).fit()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(tmp_path).fit(resume=True)


@pytest.mark.parametrize("overrides,message", [
    ({"n_patches": 300}, r"n_patches=300 is larger than the attention map \(16, 16\)"),
    ({"patch_size": 200}, r"patch_size 200 does not fit the high-resolution image \(128, 128\)"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"device": "nonsense"}, r"device 'nonsense' is not a valid torch device: "),
    pytest.param({"device": "cuda:7"},
                 r"device 'cuda:7' was asked for but CUDA is not available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")),
])
def test_impossible_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, **overrides)
    assert not (tmp_path / "run").exists()


def test_evaluation_does_not_change_the_training_trajectory(tmp_path):
    trainer = _trainer(tmp_path)
    state = trainer.generator.get_state()
    first = trainer.evaluate()
    assert torch.equal(trainer.generator.get_state(), state)
    assert trainer.evaluate() == first  # the same seeds each time


def test_baseline_models_train_with_the_same_engine(tmp_path):
    for model in ("cnn_low", "cnn_full"):
        summary = _trainer(tmp_path / model, model=model, epochs=1).fit()
        assert summary["model"] == model and summary["final_test_error"] is not None


def test_epoch_sampler_shards_and_reshuffles():
    a = EpochSampler(10, shuffle=True, seed=1, rank=0, world_size=2)
    b = EpochSampler(10, shuffle=True, seed=1, rank=1, world_size=2)
    a.set_epoch(3)
    b.set_epoch(3)
    assert sorted(list(a) + list(b)) == list(range(10))
    first = list(a)
    a.set_epoch(4)
    assert list(a) != first
    a.set_epoch(3)
    assert list(a) == first


def test_torchrun_with_two_ranks_trains_and_rank_0_writes(tmp_path):
    """DistributedDataParallel on the CPU (Gloo): shards, all-reduced evaluation."""
    import subprocess
    import sys

    out = tmp_path / "run"
    # --standalone: the rendezvous takes a free port (no fixed port to clash with other runs)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ats", "--task", "find_pattern", "--epochs", "1",
           "--set", "data.n_train=80", "--set", "data.n_test=31", "--set", "pictures=0", "--set", "eval_seeds=1",
           "--output", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('"final_test_error"') == 1  # one summary, from rank 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1
    # the test error counts all 31 items, summed over the shards of 16 and 15
    error = json.loads((out / "summary.json").read_text())["final_test_error"]
    assert 0 < error < 1 and abs(error * 31 - round(error * 31)) < 1e-9


def test_resuming_with_a_changed_setting_is_refused_by_the_python_api(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    with pytest.raises(ValueError, match="cannot change n_patches when resuming"):
        _trainer(tmp_path, epochs=2, n_patches=2).fit(resume=True)
    resumed = _trainer(tmp_path, epochs=2)  # epochs may change
    resumed.fit(resume=True)
    assert resumed.epoch == 2


# -- every item is used, and each setting takes effect --------------------------------------


def _batch(dataset, n):
    return torch.utils.data.default_collate([dataset[i] for i in range(n)])


@pytest.mark.parametrize("n_train,n_test", [(50, 30), (40, 20)], ids=["smaller-last-batch",
                                                                     "whole-batches"])
def test_every_item_is_used_once_per_epoch_and_per_evaluation_seed(n_train, n_test):
    trainer = make_trainer(**{"data.n_train": n_train, "data.n_test": n_test, "batch_size": 20,
                              "eval_seeds": 3})
    train = SeenItems(trainer, trainer.train_set)
    for epoch in (1, 2):
        train.clear()
        result = trainer.train_epoch(epoch)
        sizes = [len(b) for b in train.batches]
        assert sizes == [20] * (n_train // 20) + ([n_train % 20] if n_train % 20 else [])
        assert sorted(i for b in train.batches for i in b) == list(range(n_train))
        assert all(train.training)
        assert abs(result["train_error"] * n_train - round(result["train_error"] * n_train)) < 1e-9
    train.remove()
    test = SeenItems(trainer, trainer.test_set)
    result = trainer.evaluate()
    per_seed = -(-n_test // 20)
    assert len(test.batches) == 3 * per_seed and not any(test.training)
    for seed in range(3):
        seen = [i for b in test.batches[seed * per_seed:(seed + 1) * per_seed] for i in b]
        assert sorted(seen) == list(range(n_test))
    # the mean of 3 errors, each a count over all n_test items
    assert abs(result["test_error"] * 3 * n_test - round(result["test_error"] * 3 * n_test)) < 1e-9


def test_max_steps_bounds_the_steps_of_every_epoch():
    trainer = make_trainer(**{"data.n_train": 100, "batch_size": 20, "max_steps": 2, "epochs": 2})
    seen = SeenItems(trainer, trainer.train_set)
    trainer.fit()
    assert [len(b) for b, t in zip(seen.batches, seen.training) if t] == [20] * 4  # 2 per epoch
    assert trainer.partial is None and len(trainer.history) == 2


def test_eval_every_evaluates_every_nth_epoch_and_the_last():
    trainer = make_trainer(epochs=5, eval_every=2, max_steps=1)
    trainer.fit()
    assert ["test_error" in record for record in trainer.history] == \
        [False, True, False, True, True]


def test_eval_topk_adds_one_top_n_evaluation():
    trainer = make_trainer(epochs=1, eval_topk=True, eval_seeds=2,
                           **{"data.n_train": 40, "data.n_test": 30})
    seen = SeenItems(trainer, trainer.test_set)
    trainer.fit()
    evaluation = [d for d, t in zip(seen.deterministic, seen.training) if not t]
    assert evaluation == [False] * 4 + [True] * 2  # 2 seeds x 2 batches, then top-N once
    # the recorded value is the top-N error of this model over the whole test set
    test = _batch(trainer.test_set, 30)
    with torch.no_grad():
        logits = trainer.classifier(test["x_low"], test["x_high"], deterministic=True).logits
    top_n_error = int((logits.argmax(1) != test["y"]).sum()) / 30
    assert trainer.history[0]["test_error_topk"] == pytest.approx(top_n_error, abs=1e-12)
    plain = make_trainer(epochs=1, **{"data.n_train": 40, "data.n_test": 30})
    plain.fit()
    assert "test_error_topk" not in plain.history[0]


def test_the_learning_rate_drops_after_each_decay_epoch(monkeypatch):
    used = []
    original = Trainer.train_step

    def recording(self, batch):
        used.append(self.optimizer.param_groups[0]["lr"])
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", recording)
    trainer = make_trainer(epochs=4, max_steps=1, lr=0.01, lr_decay_at=(1, 3), lr_decay=0.5)
    trainer.fit()
    assert used == pytest.approx([0.01, 0.005, 0.005, 0.0025], rel=1e-12)
    assert [r["lr"] for r in trainer.history] == pytest.approx(used, rel=1e-12)


def test_sgd_with_momentum_takes_plain_sgd_steps():
    trainer = make_trainer(optimizer="sgd", lr=0.1, momentum=0.5, clip_norm=None)
    assert type(trainer.optimizer) is torch.optim.SGD
    batch = _batch(trainer.train_set, 8)
    params = [p for p in trainer.classifier.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    trainer.train_step(batch)
    first = [p.grad.clone() for p in params]
    middle = [p.detach().clone() for p in params]
    trainer.train_step(batch)
    for b, m, p, g1 in zip(before, middle, params, first):
        torch.testing.assert_close(b - m, 0.1 * g1, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(m - p.detach(), 0.1 * (0.5 * g1 + p.grad), rtol=1e-5,
                                   atol=1e-7)


def test_a_non_finite_loss_stops_training_and_changes_nothing():
    trainer = make_trainer(epochs=1)
    with torch.no_grad():
        trainer.classifier.head.bias[0] = float("nan")
    before = {k: v.clone() for k, v in trainer.classifier.state_dict().items()}
    with pytest.raises(FloatingPointError, match="the loss became nan"):
        trainer.train_step(_batch(trainer.train_set, 4))
    for key, value in trainer.classifier.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True)
    assert trainer.optimizer.state_dict()["state"] == {}
    with pytest.raises(FloatingPointError, match=r"the loss became nan at epoch 1, step 0; lower "
                                                 r"lr or raise smoothing"):
        trainer.fit()


@pytest.mark.parametrize("entropy", [0.0, 0.5, -0.25])
def test_the_loss_is_cross_entropy_plus_the_entropy_term_plus_regularizers(entropy):
    trainer = make_trainer(entropy=entropy)
    batch = _batch(trainer.train_set, 6)
    out = trainer.classifier(batch["x_low"], batch["x_high"],
                             generator=torch.Generator().manual_seed(0))
    a = out.ats.attention.detach().double().reshape(6, -1)
    # the entropy regulariser: strength * mean over items of sum_i a_i log(a_i + 1e-6)
    term = entropy * float((a * torch.log(a + 1e-6)).sum(1).mean())
    expected = torch.nn.functional.cross_entropy(out.logits, batch["y"]).item() + term
    assert trainer.loss(out, batch["y"]).item() == pytest.approx(expected, rel=1e-6, abs=1e-7)

    class Penalty(torch.nn.Module):  # an ats.contracts.Regularized submodule
        def regularization(self):
            return torch.tensor(0.125)

    trainer.classifier.penalty = Penalty()
    assert trainer.loss(out, batch["y"]).item() == pytest.approx(expected + 0.125, rel=1e-6)


def test_the_patch_loss_is_the_head_on_each_patch_with_the_image_label():
    trainer = make_trainer(entropy=0.0, patch_loss=0.5)
    batch = _batch(trainer.train_set, 6)
    out = trainer.classifier(batch["x_low"], batch["x_high"],
                             generator=torch.Generator().manual_seed(0))
    n = out.ats.patches.shape[1]
    assert out.patch_logits.shape == (6, n, out.logits.shape[1])
    # each patch's feature through the same head, every patch labelled with its image's label
    per_patch = trainer.classifier.head(out.ats.patch_features).reshape(6 * n, -1)
    labels = batch["y"][:, None].expand(6, n).reshape(-1)
    expected = (torch.nn.functional.cross_entropy(out.logits, batch["y"])
                + 0.5 * torch.nn.functional.cross_entropy(per_patch, labels))
    assert trainer.loss(out, batch["y"]).item() == pytest.approx(expected.item(), rel=1e-6)
    trainer.config = dataclasses.replace(trainer.config, patch_loss=0.0)
    plain = torch.nn.functional.cross_entropy(out.logits, batch["y"])
    assert trainer.loss(out, batch["y"]).item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("gain", [1.0, 4.0])
def test_head_gain_scales_the_glorot_bound_of_the_head(gain):
    trainer = make_trainer(head_gain=gain)
    head = trainer.classifier.head
    fan_in, fan_out = head.in_features, head.out_features
    bound = gain * (6 / (fan_in + fan_out)) ** 0.5
    w = head.weight.detach().abs()
    assert float(w.max()) <= bound and float(w.max()) > 0.9 * bound  # uniform on [-bound, bound]
    assert torch.count_nonzero(head.bias) == 0


def test_without_the_patch_loss_the_model_computes_no_patch_logits():
    trainer = make_trainer()
    batch = _batch(trainer.train_set, 2)
    out = trainer.classifier(batch["x_low"], batch["x_high"],
                             generator=torch.Generator().manual_seed(0))
    assert trainer.config.patch_loss == 0 and out.patch_logits is None


@pytest.mark.parametrize("name, expected", [("auto", torch.channels_last),
                                            ("channels_last", torch.channels_last),
                                            ("contiguous", torch.contiguous_format)])
def test_memory_format_lays_out_the_convolutions_of_a_cpu_run(name, expected):
    trainer = make_trainer(memory_format=name, device="cpu")
    convs = [m.weight for m in trainer.classifier.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=expected) for w in convs)
    if expected is torch.channels_last:  # a layout that differs from the default one
        assert not all(w.is_contiguous() for w in convs)


def test_both_memory_formats_train_the_same_weights():
    """The layout changes the speed, not the mathematics: two steps from the
    same seed give the same weights up to float rounding. (SGD: Adam's first
    steps are about lr * sign(gradient), which rounding flips where a gradient is ~0.)"""
    results = []
    for name in ("contiguous", "channels_last"):
        trainer = make_trainer(memory_format=name, device="cpu", optimizer="sgd", lr=0.1)
        batch = _batch(trainer.train_set, 8)
        losses = [trainer.train_step(batch).loss for _ in range(2)]
        results.append((losses, weights(trainer)))
    (loss_a, wa), (loss_b, wb) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-4)
    for key in wa:
        torch.testing.assert_close(wb[key].contiguous(), wa[key].contiguous(), rtol=1e-4,
                                   atol=1e-5, msg=key)
