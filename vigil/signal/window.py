"""The last `cap` samples of a stream as an array view, with appends that copy only the new samples.

Replaces the shift-by-copy idiom ``buf[:-k] = buf[k:]; buf[-k:] = x`` (a full-buffer memmove per
block) by writing behind the window in spare storage and moving the window to the front only when
the spare is used up.  The contents of `view` are exactly those of the shifted buffer (zeros before
anything was appended).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class SlidingWindow:
    """A fixed-length window of the latest samples (1-D, or rows of `width` columns)."""

    def __init__(self, cap: int, width: int | None = None, spare: int = 3) -> None:
        """Hold `cap` samples (rows of `width` values when given) with `spare`·`cap` rows of slack."""
        self.cap = cap
        rows = cap * (1 + max(1, spare))
        self._store = np.zeros((rows,) if width is None else (rows, width))
        self._w = cap  # the window is _store[_w - cap:_w]

    @property
    def width(self) -> int | None:
        """Columns per row (None for a 1-D window)."""
        return None if self._store.ndim == 1 else int(self._store.shape[1])

    @property
    def view(self) -> FloatArray:
        """The window (oldest first; a view valid until the next `append`)."""
        return self._store[self._w - self.cap:self._w]

    def append(self, x: FloatArray) -> None:
        """Shift `x` in at the end (the oldest samples fall out)."""
        k = len(x)
        cap = self.cap
        if k >= cap:
            self._store[:cap] = x[k - cap:]
            self._w = cap
            return
        if not k:
            return
        if self._w + k > len(self._store):
            self._store[:cap] = self._store[self._w - cap:self._w]
            self._w = cap
        self._store[self._w:self._w + k] = x
        self._w += k
