"""Stopping a run without losing work: Ctrl-C and SIGTERM.

The first signal asks the run to stop: training finishes the step it is in,
saves a checkpoint at that step and ends (evaluation, which has nothing to
save, ends at once). A second signal stops immediately; the last checkpoint
is then the one before. Either way the run ends with ``KeyboardInterrupt``
and ``--resume`` continues it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["StopRequest"]


class StopRequest:
    """Installs the SIGINT and SIGTERM handlers while in a ``with`` block.

    Attributes:
        requested: the name of the signal that asked to stop, or None.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(name)  # the second time: stop now
        self.requested = name

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was asked for."""
        if self.requested is not None:
            raise KeyboardInterrupt(self.requested)

    def __enter__(self) -> "StopRequest":
        self.requested = None
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
