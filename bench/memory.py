"""Memory of the local platform's processes (PSS), sampled from /proc."""

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tenant_pipelines.support import procs


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages split between their sharers. Run workers are forked
    from one fork server and share most of their memory, so summing their RSS would count it
    once per worker."""
    try:
        for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def processes_of(data_dir: str, root_pid: int) -> tuple[list[int], list[int]]:
    """(platform PIDs below `root_pid`, tenant workload PIDs of `data_dir`)."""
    tree = set(procs.descendants([root_pid])) | {root_pid}
    workloads = [
        pid
        for pid in procs.pids()
        if "workload_server" in (line := procs.command_line(pid) or "") and data_dir in line
    ]
    return sorted(tree - set(workloads)), workloads


@dataclass
class MemorySampler:
    """Samples the platform's total memory (PSS) in a thread until stopped; keeps the peaks."""

    data_dir: str
    root_pid: int
    interval_s: float = 0.5
    peak_total_mb: float = 0.0
    peak_platform_mb: float = 0.0
    last_total_mb: float = 0.0
    workload_mb: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        platform, workloads = processes_of(self.data_dir, self.root_pid)
        platform_mb = sum(_pss_kb(p) for p in platform) / 1024
        per_workload = [_pss_kb(p) / 1024 for p in workloads]
        self.peak_platform_mb = max(self.peak_platform_mb, platform_mb)
        self.last_total_mb = platform_mb + sum(per_workload)
        self.peak_total_mb = max(self.peak_total_mb, self.last_total_mb)
        if per_workload:
            self.workload_mb = per_workload

    def __enter__(self) -> "MemorySampler":
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
