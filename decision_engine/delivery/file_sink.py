"""Notices as JSON lines appended to a file: the demo's sender, and a test double."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from decision_engine.delivery.base import DELIVERED, RETRY, SendResult, compact_json, notice_fields
from decision_engine.store.outbox import OutboxEntry


class FileSender:
    """Appends one line per notice: the webhook's body plus `delivered_at`."""

    name = "file"

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = asyncio.Lock()
        self._file: TextIO | None = None

    async def send(self, entry: OutboxEntry) -> SendResult:
        """Append the notice; RETRY when the file cannot be written."""
        fields = notice_fields(entry)
        fields["delivered_at"] = self._clock()
        line = compact_json(fields).decode("utf-8") + "\n"
        # The write blocks the loop briefly: fine for a demo sink. The lock keeps lines whole.
        async with self._lock:
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = self.path.open("a", encoding="utf-8")
                self._file.write(line)
                self._file.flush()
            except OSError as exc:
                self._close()
                return SendResult(RETRY, f"cannot write {self.path.name}: {exc.strerror or exc}")
        return SendResult(DELIVERED, "written")

    async def aclose(self) -> None:
        """Close the file."""
        async with self._lock:
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
