"""The one exception bad input raises, and the tally kept when bad samples are skipped."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal

OnBadSample = Literal["raise", "skip"]


class DataError(Exception):
    """A missing file, an unreadable image or a malformed annotation.

    The message names the file, the annotation id (when there is one) and the field. `reason` is a short
    category without values (e.g. "outside 1..24"), used to count skipped samples per reason.
    Constructible from the message alone, so that DataLoader workers re-raise it with its own type: the
    main process then gets only the worker's traceback text, from which the error's own line is restored.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        ann_id: int | str | None = None,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        if file is None and _FROM_WORKER.match(message):
            message = message.rsplit(_RAISED_LINE, 1)[-1].strip()
        super().__init__(message)
        self.file = file
        self.ann_id = ann_id
        self.field = field
        self.reason = reason

    @classmethod
    def at(
        cls,
        file: str | Path,
        field: str,
        reason: str,
        ann_id: int | str | None = None,
        detail: str = "",
    ) -> DataError:
        """The error for `field` of annotation `ann_id` in `file`; `detail` adds values to the message."""
        where = f"{file}" if ann_id is None else f"{file}, annotation {ann_id}"
        message = f"{where}, field '{field}': {reason}" + (f" ({detail})" if detail else "")
        return cls(message, file=str(file), ann_id=ann_id, field=field, reason=reason)

    @property
    def kind(self) -> str:
        """The key skipped samples are counted under: field and reason."""
        return f"{self.field}: {self.reason}" if self.field else str(self)

    def __reduce__(self):
        attrs = {"file": self.file, "ann_id": self.ann_id, "field": self.field, "reason": self.reason}
        return _rebuild, (str(self), attrs)


# torch's DataLoader re-raises a worker's error as `type(error)("Caught <type> in DataLoader worker process
# <n>.\nOriginal Traceback ...")`, whose last line is the error as Python prints it.
_FROM_WORKER = re.compile(r"Caught DataError in DataLoader worker process \d+\.\n")
_RAISED_LINE = f"\n{DataError.__module__}.{DataError.__qualname__}: "


def _rebuild(message: str, attrs: dict) -> DataError:
    return DataError(message, **attrs)


class BadSampleLog:
    """Raises or counts DataErrors, as `on_bad_sample` says."""

    def __init__(self, on_bad_sample: OnBadSample) -> None:
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.counts: Counter[str] = Counter()

    def report(self, error: DataError) -> None:
        """Raise `error` in raise mode; count it in skip mode."""
        if self.on_bad_sample == "raise":
            raise error
        self.counts[error.kind] += 1
