"""Network helpers shared by tests that start servers (Ray heads, dashboards)."""

from __future__ import annotations

import socket


def free_ports(n: int, host: str = "") -> list[int]:
    """``n`` distinct TCP ports free right now (all held open together, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((host, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(predicate, timeout: float, what: str, log=None, every: float = 1.0):
    """``predicate()``'s first truthy value, polled every ``every`` s; an AssertionError naming
    ``what`` (with the tail of the ``log`` file, if given) after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{tail}" if tail else ""))


def stop_group(proc, grace: float = 30) -> None:
    """Stop a process group started with ``start_new_session=True``: SIGTERM its leader, which shuts
    its own children down, then SIGKILL whatever is left after ``grace`` s. (A SIGTERM to the whole
    group makes ``ray start --block`` wait out its 30 s drain for children already gone.)"""
    import os
    import signal
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def keep_local_ray(space: str, **options):
    """A module fixture's body: one local Ray for the module's searches (kept between them)."""
    import os

    import ray

    from platform.search import SearchOptions
    from platform.search.driver import init_ray

    os.environ["PLATFORM_KEEP_RAY"] = "1"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PLATFORM_DATA_DIR": os.environ["PLATFORM_DATA_DIR"],
           "PLATFORM_PRETRAINED_DIR": os.path.join(repo, ".cache", "pretrained")}
    init_ray(SearchOptions(space, **options), env)
    yield
    os.environ.pop("PLATFORM_KEEP_RAY", None)
    ray.shutdown()
