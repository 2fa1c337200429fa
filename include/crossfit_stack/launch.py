"""What supervisord runs for each service:
``python -m crossfit_stack.launch NAME RECORD [--grace SECONDS] -- ARGV``.

supervisord restarts a program that exits, and ``stopasgroup``/``killasgroup`` end its process
group when *it* stops the program. It does nothing about the processes a program leaves behind
when the program itself dies (Supervisor/supervisor#1101, open since 2018): after ``kill -9`` of
``mlflow server``, its uvicorn workers keep the port, and every restart then fails on "address in
use" until supervisord gives up (seen here: FATAL after 4 tries). This launcher closes that gap and
nothing more; restarting, backoff, logs and stop timeouts stay supervisord's.

- It is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): whatever the service forks stays
  below it even when the parent in between dies, including Airflow's task processes, which move to
  their own process groups (so ``killasgroup`` alone would miss them).
- When the service exits, for any reason, it ends every remaining descendant (SIGTERM, then SIGKILL
  after ``--grace`` seconds, default 10: the stack passes its ``CROSSFIT_STOP_GRACE_S``, and adds
  it to supervisord's stop wait) and exits with the service's status, so
  supervisord sees the crash and restarts a clean service.
- A stop signal (TERM/INT/QUIT/HUP) is passed on to the service, which shuts down as it does.
- If the launcher itself was killed with SIGKILL, the next one first ends what the previous one left
  in its process group (recorded in ``RECORD``: pid and start time).

Only the standard library and psutil are imported (not the stack's settings: the stack validates
the grace and passes it on the command line), so it starts at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def _say(message: str) -> None:
    """One line into the service's log (supervisord writes our stderr there)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        _say(f"launch: PR_SET_CHILD_SUBREAPER failed (errno {ctypes.get_errno()})")


def end_processes(procs: list[psutil.Process], grace: float) -> int:
    """SIGTERM, wait up to ``grace`` seconds, SIGKILL what is left. Returns how many were alive."""
    procs = [p for p in procs if p.is_running()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, procs = psutil.wait_procs(procs, timeout=grace if sig == signal.SIGTERM else 5)
        if not procs:
            break
    return len(procs)


def previous_group(record: Path) -> list[psutil.Process]:
    """Members of the process group of the launcher recorded in ``record`` if it is gone.

    Linux never hands out a pid that is still in use as a process group id, so members of that
    group while its leader is dead are the previous instance's leftovers and nobody else's."""
    try:
        old = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    try:
        leader = psutil.Process(old["pid"])
        if leader.create_time() == old["create_time"] or leader.pid == os.getpid():
            return []  # still alive (not ours to end) or it is us
    except psutil.NoSuchProcess:
        pass
    except psutil.Error:
        return []
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == old["pid"] and proc.pid != os.getpid():
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def _write_record(record: Path) -> None:
    me = psutil.Process()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time(), "pgid": os.getpgid(0)}))


def _spawn(argv: list[str]) -> subprocess.Popen:
    """Start the service with stop signals passed on to it (one that came first is kept)."""
    pending: list[int] = []
    holder: list[subprocess.Popen] = []

    def forward(signum: int, _frame) -> None:
        if holder:
            holder[0].send_signal(signum)
        else:
            pending.append(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    holder.append(subprocess.Popen(argv))
    for signum in pending:
        holder[0].send_signal(signum)
    return holder[0]


def _reap() -> None:
    """Collect what was re-parented to us meanwhile."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                return
        except ChildProcessError:
            return


def run(name: str, record: Path, argv: list[str], grace: float) -> int:
    leftovers = previous_group(record)
    if leftovers:
        _say(f"launch[{name}]: ending {len(leftovers)} processes left by the previous instance")
        end_processes(leftovers, grace)
    _write_record(record)
    _become_subreaper()
    child = _spawn(argv)
    code = child.wait()
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)
    rest = psutil.Process().children(recursive=True)
    if rest:
        _say(f"launch[{name}]: service exited ({code}); ending {len(rest)} processes it left")
        end_processes(rest, grace)
    _reap()
    return 128 - code if code < 0 else code


USAGE = "usage: python -m crossfit_stack.launch NAME RECORD [--grace SECONDS] -- ARGV..."
DEFAULT_GRACE_S = 10.0


def _grace(text: str) -> float | None:
    """A finite number of seconds greater than 0, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value < float("inf") else None


def parse(args: list[str]) -> tuple[str, Path, float, list[str]] | None:
    """``NAME RECORD [--grace SECONDS] -- ARGV...`` -> (name, record, grace, argv); None if malformed."""
    if "--" not in args:
        return None
    head, argv = args[: args.index("--")], args[args.index("--") + 1 :]
    if not argv or len(head) not in (2, 4) or (len(head) == 4 and head[2] != "--grace"):
        return None
    grace = _grace(head[3]) if len(head) == 4 else DEFAULT_GRACE_S
    return None if grace is None else (head[0], Path(head[1]), grace, argv)


def main(args: list[str]) -> int:
    parsed = parse(args)
    if parsed is None:
        _say(USAGE)
        return 2
    name, record, grace, argv = parsed
    started = time.monotonic()
    code = run(name, record, argv, grace)
    _say(f"launch[{name}]: exited {code} after {time.monotonic() - started:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
