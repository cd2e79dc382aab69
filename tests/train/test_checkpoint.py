"""What a checkpoint holds and gives back: every random stream of the process
(Python, numpy, torch, CUDA, the sampling generator), per rank, and the
refusal of a checkpoint whose configuration does not match the run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ats.cli import run_main
from ats.train import rng
from ats.train.checkpoint import load_checkpoint
from tests.train.helpers import make_trainer


def _states(trainer) -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampling": trainer.generator.get_state(),
    }


def _draw_from_every_stream(trainer) -> None:
    random.random()
    np.random.rand(3)
    torch.rand(3)
    torch.rand(3, generator=trainer.generator)


def _assert_same_states(a: dict, b: dict) -> None:
    assert a["python"] == b["python"]
    assert a["numpy"][0] == b["numpy"][0]
    assert all(np.array_equal(x, y) for x, y in zip(a["numpy"][1:], b["numpy"][1:]))
    assert torch.equal(a["torch"], b["torch"])
    assert torch.equal(a["sampling"], b["sampling"])


def test_every_random_stream_round_trips_through_a_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path / "run", epochs=1)
    trainer.fit()  # a real run: the streams have moved away from their seeds
    _draw_from_every_stream(trainer)
    saved = _states(trainer)
    trainer.save()
    _draw_from_every_stream(trainer)
    assert not torch.equal(trainer.generator.get_state(), saved["sampling"])
    trainer.load(tmp_path / "run" / "checkpoint.pt")
    _assert_same_states(_states(trainer), saved)
    # a fresh process's view: a new trainer, seeded afresh, loads the same states
    other = make_trainer(tmp_path / "run", epochs=1)
    other.load(tmp_path / "run" / "checkpoint.pt")
    _assert_same_states(_states(other), saved)


def test_the_checkpoint_holds_one_entry_per_stream_in_the_table(tmp_path):
    trainer = make_trainer(tmp_path / "run", epochs=1)
    trainer.save()
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["rng"]
    assert isinstance(saved, list) and len(saved) == 1  # one per rank
    assert set(saved[0]) == {s.name for s in rng.STREAMS} | {"sampling"}
    assert saved[0]["cuda"] is None or torch.cuda.is_available()


def test_a_stream_in_the_table_is_saved_and_restored_like_the_others(tmp_path, monkeypatch):
    """The CUDA stream is one row of rng.STREAMS, handled by the same code
    as Python's, numpy's and torch's; a fake row shows that code at work."""
    fake = {"state": 1, "sets": []}
    monkeypatch.setattr(rng, "STREAMS", [*rng.STREAMS, rng.Stream(
        "fake", lambda: fake["state"], lambda s: fake["sets"].append(s))])
    trainer = make_trainer(tmp_path / "run", epochs=1)
    fake["state"] = 41
    trainer.save()
    fake["state"] = 99
    trainer.load(tmp_path / "run" / "checkpoint.pt")
    assert fake["sets"] == [41]


def test_the_cuda_row_saves_and_restores_every_device_without_a_gpu(monkeypatch):
    """The CUDA row's own get/set/availability, run on the CPU with torch.cuda
    standing in: saved when CUDA is there, restored only where it is."""
    devices = {"states": [torch.tensor([1, 2], dtype=torch.uint8),
                          torch.tensor([3], dtype=torch.uint8)], "set": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(devices["states"]))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: devices["set"].append(s))
    generator = torch.Generator().manual_seed(0)
    state = rng.capture(generator)
    assert [t.tolist() for t in state["cuda"]] == [[1, 2], [3]]
    rng.restore(state, generator)
    assert [[t.tolist() for t in s] for s in devices["set"]] == [[[1, 2], [3]]]
    # resumed where CUDA is missing (device may change on resume): left alone
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rng.restore(state, generator)
    assert len(devices["set"]) == 1
    assert rng.capture(generator)["cuda"] is None
    # saved without CUDA, resumed with it: nothing to restore
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rng.restore({**state, "cuda": None}, generator)
    assert len(devices["set"]) == 1


def test_each_rank_gets_its_own_streams_back():
    states = [{"rank": 0}, {"rank": 1}, {"rank": 2}]
    assert rng.select_rank(states, 1, 3) == {"rank": 1}
    assert rng.select_rank({"rank": 0}, 0, 1) == {"rank": 0}  # single-process checkpoints
    with pytest.warns(RuntimeWarning, match=r"random states of 3 rank\(s\) but this run has 2"):
        assert rng.select_rank(states, 0, 2) is None


def test_a_sampling_state_saved_on_another_device_type_is_left_with_a_warning():
    """A CUDA generator's state (16 bytes) cannot continue a CPU one's stream:
    the global streams are restored, the sampling generator keeps its seed."""
    saved = rng.capture(torch.Generator().manual_seed(1))
    saved["sampling"] = torch.zeros(16, dtype=torch.uint8)  # a Philox state, as CUDA saves it
    saved["torch"] = torch.Generator().manual_seed(5).get_state()
    generator = torch.Generator().manual_seed(2)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(2))
    with pytest.warns(RuntimeWarning, match=r"saved on another device type \(16 state bytes"):
        rng.restore(saved, generator)
    assert torch.equal(torch.rand(3, generator=generator), expected)
    assert torch.equal(torch.get_rng_state(), saved["torch"])


# -- a checkpoint that does not match the run ----------------------------------------------


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    make_trainer(tmp_path / "run", epochs=1).fit()
    with pytest.raises(ValueError, match=r"checkpoint\.pt is for model='ats', not 'cnn_low'"):
        make_trainer(tmp_path / "run", epochs=2, model="cnn_low").fit(resume=True)


def test_a_config_json_that_does_not_match_the_checkpoint_is_refused(tmp_path):
    """config.json says one thing (edited, or copied from another run), the
    checkpoint another: resuming is refused, naming the setting, and the
    checkpoint is left as it was."""
    out = tmp_path / "run"
    args = ["--task", "find_pattern", "--epochs", "1", "--output", str(out), "--no-progress",
            "--set", "data.n_train=40", "--set", "data.n_test=20", "--set", "eval_seeds=1",
            "--set", "pictures=0"]
    assert CliRunner().invoke(run_main, args).exit_code == 0
    before = (out / "checkpoint.pt").read_bytes()
    config = json.loads((out / "config.json").read_text())
    config["n_patches"] = 2
    (out / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(run_main, ["--task", "find_pattern", "--epochs", "2", "--output",
                                           str(out), "--resume", "--no-progress"])
    assert result.exit_code == 1
    assert "cannot change n_patches when resuming" in result.output
    assert (out / "checkpoint.pt").read_bytes() == before
