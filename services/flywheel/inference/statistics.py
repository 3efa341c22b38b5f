"""Per model version counts and cumulative times, as the Open Inference Protocol's statistics
extension reports them (Triton's figures): requests that succeeded and failed with their
total time, rows inferred, session runs (requests coalesced into one run count once) and the
runs per batch size. Updated on the event loop; plain integer additions per call."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class VersionStatistics:
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    # Batch size -> session runs of that size.
    runs_by_batch_size: dict[int, int] = field(default_factory=dict)

    def executed(self, rows: int) -> None:
        self.execution_count += 1
        self.runs_by_batch_size[rows] = self.runs_by_batch_size.get(rows, 0) + 1

    def succeeded(self, started_ns: int, rows: int) -> None:
        self.success_count += 1
        self.success_ns += time.perf_counter_ns() - started_ns
        self.inference_count += rows
        self.last_inference_ms = time.time_ns() // 1_000_000

    def failed(self, started_ns: int) -> None:
        self.fail_count += 1
        self.fail_ns += time.perf_counter_ns() - started_ns


class Statistics:
    """Every version's statistics, kept while the process lives (an unload does not reset
    them)."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, int], VersionStatistics] = {}

    def of(self, name: str, version: int) -> VersionStatistics:
        found = self._by_version.get((name, version))
        if found is None:
            found = self._by_version[(name, version)] = VersionStatistics()
        return found

    def run_observer(self, name: str, version: int) -> Callable[[int], None]:
        """The batcher's per-run callback for one version."""
        return self.of(name, version).executed

    def versions(self, name: str = "", version: int = 0) -> list[tuple[str, int, VersionStatistics]]:
        """(name, version, statistics), sorted; of one model and one version when given."""
        return sorted(((n, v, s) for (n, v), s in self._by_version.items()
                       if (not name or n == name) and (not version or v == version)),
                      key=lambda item: (item[0], item[1]))
