"""The CPU priority of a task process (the policy, which task runs at which level, is the DAG's)."""

from __future__ import annotations

import os


def lower_cpu_priority(niceness: int) -> None:
    """Run the rest of this process (and the threads it starts) at ``niceness`` or lower priority.

    Absolute and never raising priority: tasks run one after another in one process (as under
    ``dag.test()``) keep the level instead of stacking it."""
    if os.getpriority(os.PRIO_PROCESS, 0) < niceness:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
