"""Progress of ``plan`` / ``sync`` on stderr: live on a terminal, periodic single lines elsewhere.

``for_stream`` picks one: ``TerminalProgress`` when the stream is a TTY (a counter while planning,
one line per import as it ends), ``LineProgress`` otherwise (CI logs): one line when planning ends
and then at most one line per ``interval`` seconds or per ``step`` percent of the imports, whichever
comes first, plus the last one. Both are called by ``SyncEngine`` as ``progress(event, done, total,
outcome)`` with event ``planned``, ``imported`` or ``failed``.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, TextIO


class TerminalProgress:
    def __init__(self, stream: TextIO):
        self.stream = stream

    def __call__(self, event, done, total, outcome) -> None:
        if event == "planned":
            self.stream.write(f"\rplanning {done}/{total}")
            if done == total:
                self.stream.write("\n")
        else:
            entry = outcome.item.entry
            mark = "ok  " if event == "imported" else "FAIL"
            self.stream.write(f"[{done:>{len(str(total))}}/{total}] {mark} {entry.target} "
                              f"({outcome.duration:.1f}s)\n")
        self.stream.flush()


class LineProgress:
    def __init__(self, stream: TextIO, *, interval: float = 10.0, step: int = 10,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.interval, self.step, self.clock = stream, interval, step, clock
        self._last_time = clock()
        self._last_percent = 0
        self._failed = 0

    def __call__(self, event, done, total, outcome) -> None:
        if event == "planned":
            if done == total:
                self._emit(f"planned {total} entries")
            return
        if event == "failed":
            self._failed += 1
        percent = done * 100 // total if total else 100
        due = (self.clock() - self._last_time >= self.interval
               or percent >= self._last_percent + self.step or done == total)
        if due:
            self._last_percent = percent - percent % self.step if self.step else percent
            self._emit(f"imports {done}/{total} done ({percent}%), {self._failed} failed")

    def _emit(self, text: str) -> None:
        self._last_time = self.clock()
        self.stream.write(f"progress: {text}\n")
        self.stream.flush()


def for_stream(stream: TextIO) -> Optional[Callable]:
    isatty = getattr(stream, "isatty", None)
    return TerminalProgress(stream) if isatty and isatty() else LineProgress(stream)
