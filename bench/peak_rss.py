"""Peak resident memory of this process over a block, for the CPU figures of the benchmarks
(shared by bench/pipeline.py and bench/reference_pipeline.py, which run in different
interpreters)."""

from __future__ import annotations

import os
import threading
import time


class PeakRss:
    """Peak resident set size (bytes, in `.peak`) while the block runs, sampled every 5 ms."""

    def __enter__(self) -> PeakRss:
        self.peak, self._running = resident_bytes(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()


def resident_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
