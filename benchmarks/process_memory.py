"""Peak memory of processes the benchmark does not own: the stack's task processes, the plain script.

A thread reads, every ``every`` seconds, the kernel's high-water mark of resident memory
(``VmHWM`` in ``/proc/<pid>/status``: the largest RSS the process has had since it started) of every
descendant of some root processes, and keeps each process's last reading. Because it is a
high-water mark, a peak between two readings is not lost; only growth in a process's last
``every`` seconds before it exits is. RSS counts the pages a task shares with the process it was
forked from (the scheduler's preloaded imports), so it is what ``top`` shows, not what the task
added. Linux only.

    with PeakMemory(roots=lambda: [pid], label=lambda pid, cmdline: "plain script") as peaks:
        ...
    peaks.largest()  # {"label": ..., "pid": ..., "peak_rss_mb": ...}
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable

# The title Airflow 3's task runner gives a task's process once it knows its task
# (task_runner.startup): the task instance's id. Its supervisor, the process it was forked from,
# is titled "airflow worker -- LocalExecutor: <id>" and is not the task.
TASK_TITLE = re.compile(r"^airflow worker -- ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:  # gone, or not ours to read
        return None


def peak_rss_bytes(pid: int) -> int | None:
    """``VmHWM`` of ``pid`` in bytes; None once the process is gone."""
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def cmdline(pid: int) -> str | None:
    text = _read(f"/proc/{pid}/cmdline")
    return None if text is None else text.replace("\0", " ").strip()


def task_instance_id(pid: int, title: str) -> str | None:
    """The task instance id of an Airflow task process (by its title), else None."""
    match = TASK_TITLE.match(title)
    return match.group(1) if match else None


class PeakMemory:
    """Polls the peak RSS of the labelled descendants of ``roots()`` until the block ends.

    ``label(pid, cmdline)`` names a process to follow (None: not this one). A process's title can
    change after it is forked (a task runner renames itself once it knows its task), so every
    process is asked again at every reading and keeps the last label it had. Descendants are found
    from ``/proc/<pid>/stat`` read once per new process (a scan of every process at every reading
    cost about 9% of a core on this busy machine).
    """

    def __init__(
        self,
        roots: Callable[[], Iterable[int]],
        label: Callable[[int, str], str | None],
        every: float = 0.25,
        include_roots: bool = False,
    ) -> None:
        self.roots, self.label, self.every, self.include_roots = roots, label, every, include_roots
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (label, bytes)
        self.cpu_s = 0.0  # what the readings cost, in CPU seconds of this thread
        self._parent: dict[int, int | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.read()  # a last reading of whoever is still there

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.read()
        self.cpu_s = time.thread_time()

    def _descendants(self) -> list[int]:
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        self._parent = {pid: self._parent[pid] if pid in self._parent else _ppid(pid) for pid in pids}
        children: dict[int, list[int]] = {}
        for pid, parent in self._parent.items():
            children.setdefault(parent, []).append(pid)
        roots = [pid for pid in self.roots() if pid in pids]
        found, todo = (list(roots) if self.include_roots else []), list(roots)
        while todo:
            kids = children.get(todo.pop(), [])
            found += kids
            todo += kids
        return found

    def read(self) -> None:
        for pid in self._descendants():
            title = cmdline(pid)
            name = self.label(pid, title) if title is not None else None
            name = name or (self.peaks[pid][0] if pid in self.peaks else None)
            peak = peak_rss_bytes(pid) if name is not None else None
            if peak is not None:
                self.peaks[pid] = (name, max(peak, self.peaks.get(pid, (name, 0))[1]))

    def by_label(self) -> dict[str, int]:
        """The largest peak of each label, in bytes."""
        out: dict[str, int] = {}
        for name, peak in self.peaks.values():
            out[name] = max(peak, out.get(name, 0))
        return out

    def largest(self) -> dict[str, object] | None:
        if not self.peaks:
            return None
        pid, (name, peak) = max(self.peaks.items(), key=lambda item: item[1][1])
        return {"label": name, "pid": pid, "peak_rss_mb": round(peak / 1e6, 1)}


def _ppid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")  # "pid (comm) state ppid ...": comm may hold spaces and ")"
    return int(stat.rpartition(")")[2].split()[1]) if stat else None
