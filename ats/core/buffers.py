"""Host buffers for extracted patches, reused once nothing references them.

A fresh output of many megabytes is fresh memory: the first write to each
page faults and the OS zeroes it, which can cost as much as the extraction
itself (docs/geometry.md, "The numba backend in detail"). Whether an
allocation gets fresh pages is up to the C allocator (glibc maps large
blocks anew and returns freed heap tops to the OS), so the cost comes and
goes from call to call. :class:`PatchBuffers` keeps the last few buffers and
hands one out again only when nothing but the pool holds its memory:
``AttentionSampling`` extracts into them (pinned ones when its networks are
on CUDA), and the numba extractor allocates its default outputs from one.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["PatchBuffers"]

Empty = Callable[[tuple[int, ...], torch.dtype], Tensor]


def _storage_users(t: Tensor) -> int:
    """How many tensors hold ``t``'s memory (plus the temporary storage
    object); -1 where torch does not tell, which disables reuse."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:  # pragma: no cover - an older or newer torch
        return -1
    return use_count(t.untyped_storage()._cdata)


def _host_empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    return torch.empty(shape, dtype=dtype)


def _pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


class _Slot:
    """One buffer of a pool; the pool keeps it, users get views of it."""

    def __init__(self, key: tuple, buffer: Tensor) -> None:
        self.key = key
        self.buffer = buffer
        self.users = _storage_users(buffer)  # the pool's reference alone
        self.event: object | None = None  # a device copy still reading it

    def free(self) -> bool:
        if self.event is not None:
            if not self.event.query():
                return False
            self.event = None
        return self.users > 0 and _storage_users(self.buffer) == self.users


_POOLS: weakref.WeakSet = weakref.WeakSet()


def _after_fork() -> None:  # a lock held by another thread at fork stays held
    for pool in list(_POOLS):
        pool._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class PatchBuffers:
    """Host buffers for extracted patches, reused once nothing references them.

    :meth:`take` hands out a view of a buffer that no tensor but the pool's
    own references any more: the patches returned earlier, any view of them,
    numpy arrays made from them and the copies autograd saved for the
    backward pass all hold it, so nothing a caller or the graph still uses is
    ever overwritten. A pinned buffer is also held until the device copy that
    reads it has finished (an event recorded by :meth:`copied`).

    Args:
        keep: how many buffers to keep, the least recently used dropped first
            (two of a shape let a step run while the previous step's output
            is still referenced; those in use stay alive with their users).
        max_bytes: larger buffers are handed out but not kept.
        empty: allocates a host buffer ``(shape, dtype) -> Tensor``
            (default ``torch.empty``).
        pinned_empty: allocates a pinned buffer (default
            ``torch.empty(..., pin_memory=True)``).
        new_event: makes an event with ``record(stream)`` and ``query()``
            (default ``torch.cuda.Event``).
    """

    def __init__(self, keep: int = 4, *, max_bytes: int | None = None,
                 empty: Empty = _host_empty, pinned_empty: Empty = _pinned_empty,
                 new_event: Callable[[], object] | None = None) -> None:
        self.keep = keep
        self.max_bytes = max_bytes
        self._empty = empty
        self._pinned_empty = pinned_empty
        self._new_event = new_event
        self._slots: list[_Slot] = []  # least recently used first
        self._lock = threading.Lock()
        _POOLS.add(self)

    def take(self, shape: Sequence[int], dtype: torch.dtype, *, pinned: bool = False) -> Tensor:
        """A contiguous ``shape``/``dtype`` host tensor to fill: a view of a
        buffer nothing else references, or of a new one."""
        key = (tuple(shape), dtype, pinned)
        with self._lock:
            for i, slot in enumerate(self._slots):
                if slot.key == key and slot.free():
                    self._slots.append(self._slots.pop(i))
                    return slot.buffer.view(key[0])
            buffer = (self._pinned_empty if pinned else self._empty)(key[0], dtype)
            if self.max_bytes is None or buffer.numel() * buffer.element_size() <= self.max_bytes:
                self._slots.append(_Slot(key, buffer))
                del self._slots[:-self.keep]
            return buffer.view(key[0])

    def copied(self, patches: Tensor, stream: object | None = None) -> None:
        """Hold the buffer under ``patches`` until the work queued so far on
        ``stream`` (default: the current CUDA stream), i.e. the non-blocking
        copy that reads it, has finished."""
        new_event = self._new_event or torch.cuda.Event
        with self._lock:
            for slot in self._slots:
                if slot.buffer.data_ptr() == patches.data_ptr():
                    slot.event = new_event()
                    slot.event.record(stream)

    def clear(self) -> None:
        """Drop every buffer (those still in use stay alive with their users)."""
        with self._lock:
            self._slots.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def __getstate__(self) -> dict:
        # Buffers are scratch memory: copies and pickles of a module start empty.
        state = self.__dict__.copy()
        state.update(_slots=[], _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        _POOLS.add(self)
