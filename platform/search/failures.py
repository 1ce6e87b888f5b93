"""Which trial failures Tune retries: lost nodes and workers, never the trial's own fault.

GPU workers on spot instances are reclaimed; the trials they ran should continue from their
last checkpoint on another node. A trial that fails by itself (NaN loss, CUDA out of memory,
an exception in the trainer) would fail the same way again and must end as failed at once.

Tune's ``FailureConfig(max_failures=N)`` retries every failure alike, so the search runs with
``max_failures=MAX_NODE_FAILURES`` and :func:`install_retry_policy` makes Tune's per-trial
recovery decision look at the error first: only a node or worker failure (the trial's actor
died: ``RayActorError`` and its kin) is retried. A preempted actor (a drained spot node) is not
even counted by Tune.

:func:`classify_failure` turns a failed trial's error text into the one-line reason the search
records (non-finite loss, CUDA out of memory, or the exception).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MAX_NODE_FAILURES = 3
_OWN_FAULT: dict[str, bool] = {}  # trial_id -> its last failure was its own fault


def is_node_failure(exc: BaseException | None) -> bool:
    """The trial's process or node went away (not an error raised by the trial's code)."""
    from ray.exceptions import (
        NodeDiedError,
        ObjectLostError,
        OwnerDiedError,
        RayActorError,
        RayTaskError,
        WorkerCrashedError,
    )

    lost = (RayActorError, NodeDiedError, WorkerCrashedError, ObjectLostError, OwnerDiedError)
    if isinstance(exc, RayTaskError) and not isinstance(exc, lost):
        try:
            exc = exc.as_instanceof_cause()
        except Exception:  # an unpicklable cause: the trial's own code raised it
            return False
    return isinstance(exc, lost)


def install_retry_policy() -> bool:
    """Make Tune retry a failed trial only after a node/worker failure (idempotent).

    Returns False (and Tune retries nothing) when this Ray's ``Trial`` lacks the two methods
    the policy wraps."""
    from ray.tune.experiment import Trial

    if getattr(Trial, "_platform_retry_policy", False):
        return True
    handle, recover = getattr(Trial, "handle_error", None), getattr(Trial, "should_recover", None)
    if handle is None or recover is None:
        log.warning("this Ray's Trial has no handle_error/should_recover: failed trials are not retried")
        return False

    def handle_error(self, exc=None):
        _OWN_FAULT[self.trial_id] = not is_node_failure(exc)
        return handle(self, exc)

    def should_recover(self):
        return not _OWN_FAULT.get(self.trial_id, False) and recover(self)

    Trial.handle_error, Trial.should_recover = handle_error, should_recover
    Trial._platform_retry_policy = True
    return True


def failure_config():
    """Tune's FailureConfig of a search: up to MAX_NODE_FAILURES retries of lost trials."""
    from ray import tune

    if not install_retry_policy():
        return tune.FailureConfig(max_failures=0)
    return tune.FailureConfig(max_failures=MAX_NODE_FAILURES)


def classify_failure(text: str) -> str:
    """A one-line reason from a trial's error text: non-finite loss, CUDA OOM or the exception."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if ("Error" in line or "Exception" in line) and ":" in line),
                lines[-1] if lines else "unknown error")
    if "NonFiniteLossError" in text:
        msg = next((line for line in reversed(lines) if "NonFiniteLossError" in line), last)
        return "failed (nan-loss): " + msg.split("NonFiniteLossError:", 1)[-1].strip()[:400]
    if "TrialOutOfMemoryError" in text or "OutOfMemoryError" in text or "CUDA out of memory" in text:
        return "failed (cuda-oom): CUDA out of memory; later trials of this model/crop/batch get a whole GPU"
    # "pkg.mod.SomeError: message" -> "SomeError: message"
    head, _, msg = last.partition(": ")
    name = head.split(".")[-1].split("(")[-1].rstrip(")")
    return f"failed (exception): {name}: {msg}"[:500] if msg else f"failed (exception): {last}"[:500]
