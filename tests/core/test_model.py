"""The AttentionSampling module: its record, where data lives, errors, and a
smoke training run. Its gradient is checked exactly in test_model_gradient.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ats.core.model import AttentionSampling
from ats.core.sampling import WithoutReplacement, WithReplacement
from ats.plugins.networks.small import SmallAttention, SmallFeature
from tasks.find_pattern import FindPatternDataset


def _model(**kwargs) -> AttentionSampling:
    torch.manual_seed(0)
    defaults = dict(n_patches=3, patch_size=16, smoothing=1e-4)
    defaults.update(kwargs)
    return AttentionSampling(SmallAttention(), SmallFeature(), **defaults)


def _batch(n=4, train=True):
    data = FindPatternDataset(n, train=train)
    return torch.utils.data.default_collate([data[i] for i in range(n)])


def test_forward_returns_the_whole_record():
    batch = _batch()
    out = _model()(batch["x_low"], batch["x_high"], generator=torch.Generator().manual_seed(0))
    assert out.features.shape == (4, 32)
    assert out.attention.shape == (4, 16, 16)
    torch.testing.assert_close(out.attention.sum((1, 2)), torch.ones(4))
    assert out.patches.shape == (4, 3, 1, 16, 16)
    assert out.patches.dtype == torch.float32  # uint8 x_high converted to [0, 1]
    assert out.offsets.shape == out.samples.shape == (4, 3, 2)
    assert out.probs.shape == (4, 3)
    # probs are the attention at the samples; offsets follow the geometry
    # (cell 8 px, patch 16: start = 8 s + 4 - 8)
    for b in range(4):
        for k in range(3):
            r, c = out.samples[b, k].tolist()
            assert out.probs[b, k] == out.attention[b, r, c]
            assert out.offsets[b, k].tolist() == [8 * r - 4, 8 * c - 4]
            ro, co = out.offsets[b, k].tolist()
            expected = torch.zeros(16, 16)
            src = batch["x_high"][b, 0].float() / 255
            rs, cs = max(ro, 0), max(co, 0)
            expected[rs - ro:min(ro + 16, 128) - ro, cs - co:min(co + 16, 128) - co] = \
                src[rs:ro + 16, cs:co + 16]
            torch.testing.assert_close(out.patches[b, k, 0], expected)


def test_x_high_may_be_a_numpy_memmap_in_host_memory(tmp_path):
    batch = _batch()
    path = tmp_path / "images.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=tuple(batch["x_high"].shape))
    mm[:] = batch["x_high"].numpy()
    mm.flush()
    readonly = np.memmap(path, dtype=np.uint8, mode="r", shape=mm.shape)
    model = _model()
    a = model(batch["x_low"], readonly, generator=torch.Generator().manual_seed(1))
    b = model(batch["x_low"], batch["x_high"], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.patches, b.patches)
    torch.testing.assert_close(a.features, b.features)


@pytest.mark.cuda
def test_networks_on_cuda_with_x_high_in_host_memory():
    batch = _batch()
    model = _model().cuda()
    out = model(batch["x_low"].cuda(), batch["x_high"],
                generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.patches.is_cuda and out.features.is_cuda
    assert not batch["x_high"].is_cuda


def test_deterministic_mode_takes_the_top_positions():
    batch = _batch()
    out = _model()(batch["x_low"], batch["x_high"], deterministic=True)
    top = torch.topk(out.attention.reshape(4, -1), 3).indices
    flat = out.samples[..., 0] * 16 + out.samples[..., 1]
    assert torch.equal(flat, top)


def test_one_dimensional_signals():
    class Att(nn.Module):
        def forward(self, x):
            return x.mean(1)

    class Feat(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    model = AttentionSampling(Att(), Feat(), n_patches=2, patch_size=5)
    x_high = torch.arange(2 * 40, dtype=torch.float32).reshape(2, 1, 40)
    x_low = F.avg_pool1d(x_high, 4)
    out = model(x_low, x_high)
    assert out.patches.shape == (2, 2, 1, 5) and out.features.shape == (2, 5)


def test_errors_name_the_problem():
    batch = _batch()
    model = _model()
    with pytest.raises(ValueError, match="same batch size"):
        model(batch["x_low"], batch["x_high"][:2])
    with pytest.raises(ValueError, match=r"patch_size \(200, 200\) is larger than the high-resolution image"):
        _model(patch_size=200)(batch["x_low"], batch["x_high"])
    with pytest.raises(ValueError, match="x_low must have shape"):
        model(batch["x_low"][:, 0, 0], batch["x_high"])
    with pytest.raises(ValueError, match="n=400 distinct positions"):
        _model(n_patches=400)(batch["x_low"], batch["x_high"])
    with pytest.raises(ValueError, match="n_patches must be a positive int"):
        _model(n_patches=0)
    with pytest.raises(ValueError, match="patch_size must be positive"):
        _model(patch_size=0)
    with pytest.raises(KeyError, match="unknown sampler"):
        _model(sampler="without_replacment")
    with pytest.raises(KeyError, match="unknown extractor"):
        _model(extractor="fast")


@pytest.mark.parametrize("sampler,n_patches", [(WithoutReplacement(), 2), (WithReplacement(), 3)])
def test_smoke_training_finds_the_pattern(sampler, n_patches):
    """A synthetic task that needs the attention: the low view shows where
    the texture is, not which; >= 95% test accuracy within 12 epochs of 1000
    images (a bound on work, not on time: seeded, the same on any machine)."""
    torch.manual_seed(0)
    model = _model(sampler=sampler, n_patches=n_patches)
    head = nn.Linear(32, 4)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=5e-3)
    train = FindPatternDataset(1000, train=True)
    test = _batch(300, train=False)
    loader = torch.utils.data.DataLoader(train, batch_size=20, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    accuracy = 0.0
    for epoch in range(12):
        for batch in loader:
            out = model(batch["x_low"], batch["x_high"], generator=g)
            loss = F.cross_entropy(head(out.features), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        with torch.no_grad():
            out = model(test["x_low"], test["x_high"], generator=g)
            accuracy = (head(out.features).argmax(1) == test["y"]).float().mean().item()
        if accuracy >= 0.97:
            break
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f} after {epoch + 1} epochs"


# -- smoothing default and zero-probability draws -------------------------------------------


def test_default_smoothing_is_the_training_default():
    import inspect

    from ats.config import RunConfig

    default = inspect.signature(AttentionSampling).parameters["smoothing"].default
    assert default == RunConfig().smoothing == 1e-5
    assert AttentionSampling(SmallAttention(), SmallFeature(), n_patches=1,
                             patch_size=4).smoothing == 1e-5


@pytest.mark.parametrize("sampler", [WithoutReplacement("unbiased"), WithoutReplacement("original")])
def test_peaked_attention_without_smoothing_trains_with_finite_gradients(sampler):
    """smoothing=0 and a softmax that underflows to one-hot: 3 distinct draws
    must take a = 0 cells, which contribute zero gradient, not NaN."""
    class Peaked(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1e4))

        def forward(self, x):
            scores = torch.zeros(x.shape[0], 1, 4, 4)
            scores[:, :, 0, 0] = 1.0
            return scores * self.w

    model = AttentionSampling(Peaked(), SmallFeature(), n_patches=3, patch_size=16,
                              sampler=sampler, smoothing=0.0)
    batch = _batch()
    out = model(batch["x_low"], batch["x_high"], generator=torch.Generator().manual_seed(0))
    assert (out.probs[:, 1:] == 0).all()
    out.features.sum().backward()
    assert model.attention.w.grad.item() == 0.0  # the one-hot softmax has a zero Jacobian
    assert all(torch.isfinite(p.grad).all() for p in model.feature.parameters())


# -- reused (and pinned) patch buffers ------------------------------------------------------


def _fresh_patches(out, x_high, patch=16):
    from ats.core.extract import extract_patches

    return extract_patches(x_high, out.offsets, patch, backend="reference", as_float=True)


def test_patch_buffers_are_reused_only_once_nothing_holds_the_patches():
    batch = _batch()
    model = _model()
    g = torch.Generator().manual_seed(0)
    first = model(batch["x_low"], batch["x_high"], generator=g)
    kept = first.patches.clone()
    ptr = first.patches.data_ptr()
    # the caller still holds `first`: the next call must not write into it
    second = model(batch["x_low"], batch["x_high"], generator=g)
    assert second.patches.data_ptr() != ptr and len(model.patch_buffers) == 2
    assert torch.equal(first.patches, kept)
    assert torch.equal(second.patches, _fresh_patches(second, batch["x_high"]))
    assert not torch.equal(second.offsets, first.offsets)
    # autograd keeps the patches (the feature network's saved input) until backward
    loss = second.features.sum()
    del first, kept
    third = model(batch["x_low"], batch["x_high"], generator=g)
    assert third.patches.data_ptr() == ptr  # the first buffer is free again
    assert torch.equal(third.patches, _fresh_patches(third, batch["x_high"]))
    second_ptr, second_patches = second.patches.data_ptr(), second.patches.clone()
    del second
    fourth = model(batch["x_low"], batch["x_high"], generator=g)
    assert fourth.patches.data_ptr() not in (ptr, second_ptr)  # `loss` holds the graph
    loss.backward()
    del loss, third
    fifth = model(batch["x_low"], batch["x_high"], generator=g)
    assert fifth.patches.data_ptr() in (ptr, second_ptr)
    assert torch.equal(fifth.patches, _fresh_patches(fifth, batch["x_high"]))
    assert not torch.equal(fifth.patches, second_patches)


def test_a_training_loop_cycles_through_two_buffers_and_numpy_views_count():
    batch = _batch()
    model = _model()
    g = torch.Generator().manual_seed(1)
    ptrs = set()
    for _ in range(5):  # `out` of the previous step is alive during the next forward
        out = model(batch["x_low"], batch["x_high"], generator=g)
        out.features.sum().backward()
        ptrs.add(out.patches.data_ptr())
    assert len(ptrs) == 2
    view = out.patches.numpy()  # a numpy view of the patches holds the buffer too
    kept, ptr = view.copy(), out.patches.data_ptr()
    del out
    for _ in range(3):
        nxt = model(batch["x_low"], batch["x_high"], generator=g)
        assert nxt.patches.data_ptr() != ptr
    assert np.array_equal(view, kept)


def test_without_buffers_the_module_extracts_a_fresh_output_with_the_same_patches():
    batch = _batch()
    model = _model()
    a = model(batch["x_low"], batch["x_high"], generator=torch.Generator().manual_seed(3))
    model.patch_buffers = None
    b = model(batch["x_low"], batch["x_high"], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.patches, b.patches) and torch.equal(a.features, b.features)


class _FakeEvent:
    """Stands in for torch.cuda.Event: done once the test says so."""

    pending: list = []

    def __init__(self):
        self.done = False
        self.stream = "unset"
        _FakeEvent.pending.append(self)

    def record(self, stream=None):
        self.stream = stream

    def query(self):
        return self.done


def test_pinned_buffers_wait_for_the_device_copy_that_reads_them():
    """The pinned path's bookkeeping on the CPU: a fake pin function and a
    fake CUDA event (the copy itself needs a GPU: see the cuda test below)."""
    from ats.core.buffers import PatchBuffers

    pinned = []

    def fake_pin(shape, dtype):
        pinned.append(torch.empty(shape, dtype=dtype))
        return pinned[-1]

    _FakeEvent.pending = []
    pool = PatchBuffers(pinned_empty=fake_pin, new_event=_FakeEvent)
    a = pool.take((2, 3), torch.float32, pinned=True)
    assert len(pinned) == 1 and a.data_ptr() == pinned[0].data_ptr()
    pool.copied(a, stream="s0")
    assert _FakeEvent.pending[0].stream == "s0"
    del a  # no tensor holds it, but the copy is still running: not reused
    b = pool.take((2, 3), torch.float32, pinned=True)
    assert len(pinned) == 2 and b.data_ptr() == pinned[1].data_ptr()
    _FakeEvent.pending[0].done = True
    c = pool.take((2, 3), torch.float32, pinned=True)
    assert len(pinned) == 2 and c.data_ptr() == pinned[0].data_ptr()
    # host (unpinned) buffers and other shapes or dtypes are separate
    d = pool.take((2, 3), torch.float32)
    e = pool.take((2, 3), torch.uint8, pinned=True)
    assert len(pinned) == 3 and d.data_ptr() not in (b.data_ptr(), c.data_ptr())
    assert e.dtype == torch.uint8 and e.shape == (2, 3)
    # only `keep` buffers are kept; those in use stay alive with their users
    small = PatchBuffers(keep=1)
    f = small.take((4,), torch.float32)
    f.fill_(7)
    g = small.take((4,), torch.float32)
    assert len(small) == 1 and f.tolist() == [7.0] * 4 and g.data_ptr() != f.data_ptr()


def test_copies_and_pickles_of_the_module_start_without_buffers():
    import copy
    import pickle

    batch = _batch()
    model = _model()
    model(batch["x_low"], batch["x_high"])
    assert len(model.patch_buffers) == 1
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert len(clone.patch_buffers) == 0
        out = clone(batch["x_low"], batch["x_high"], generator=torch.Generator().manual_seed(0))
        assert len(clone.patch_buffers) == 1
        assert torch.equal(out.patches, _fresh_patches(out, batch["x_high"]))


@pytest.mark.cuda
def test_host_images_reach_cuda_networks_through_reused_pinned_buffers():
    batch = _batch()
    model = _model().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    outs = []
    for _ in range(3):
        out = model(batch["x_low"].cuda(), batch["x_high"], generator=g)
        assert out.patches.is_cuda
        expected = _fresh_patches(out, batch["x_high"]).cuda()
        assert torch.equal(out.patches, expected)
        outs.append(out)
    buffers = model.patch_buffers
    assert 1 <= len(buffers) <= 2 and all(s.buffer.is_pinned() for s in buffers._slots)
    torch.cuda.synchronize()
    # the CUDA patches the caller keeps are copies: a pinned buffer is free
    # again once its copy is done, so the next call allocates none
    before = {s.buffer.data_ptr() for s in buffers._slots}
    out = model(batch["x_low"].cuda(), batch["x_high"], generator=g)
    assert {s.buffer.data_ptr() for s in buffers._slots} == before
    for out in [*outs, out]:
        assert torch.equal(out.patches, _fresh_patches(out, batch["x_high"]).cuda())
