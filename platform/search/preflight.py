"""Before a search starts: can the Ray cluster ever run one of its trials?

Ray does not fail a trial it cannot place; it waits, printing "No trial is running ... 0 GPUs
available" every minute, for ever. :func:`check_cluster_fits` compares what one trial asks
(``resources.workers`` x ``gpus_per_worker`` / ``cpus_per_worker``) with what the cluster has
or can autoscale to, and stops with a clear error instead.
"""

from __future__ import annotations

import logging

from platform.errors import ConfigError

log = logging.getLogger(__name__)


def trial_request(resources: dict) -> dict[str, float]:
    """GPUs and CPUs one trial needs (every worker of a DDP trial), and the most one worker needs."""
    workers = int(resources.get("workers", 1))
    gpus, cpus = float(resources.get("gpus_per_worker", 0)), float(resources.get("cpus_per_worker", 1))
    return {"GPU": workers * gpus, "CPU": workers * cpus, "worker_GPU": gpus, "worker_CPU": cpus}


def can_autoscale() -> bool:
    """Whether the connected cluster runs Ray's autoscaler (it may add nodes with GPUs)."""
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        return bool(_internal_kv_get("__autoscaling_status")) or bool(_internal_kv_get("__autoscaling_status_legacy"))
    except Exception:  # no GCS key API in this Ray: assume it might
        return True


def check_cluster_fits(spec, *, address: str | None) -> None:
    """A :class:`ConfigError` when no node of the connected cluster could run one trial's workers
    and the cluster cannot grow; a warning when it might only after autoscaling."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    check_fits(spec, nodes, ray.cluster_resources(), address=address,
               can_grow=bool(address) and can_autoscale())


def check_local_fits(spec, num_cpus: int, num_gpus: int) -> None:
    """The same check for the local Ray the driver is about to start (one node: nothing to wait
    for), made before the floors and Ray's start so that a search that cannot run says so at once."""
    node = {"CPU": float(num_cpus), "GPU": float(num_gpus)}
    check_fits(spec, [node], node, address=None, can_grow=False)


def check_fits(spec, nodes: list[dict], total: dict, *, address: str | None, can_grow: bool) -> None:
    need = trial_request(spec["resources"])
    fits = any(n.get("GPU", 0) >= need["worker_GPU"] and n.get("CPU", 0) >= need["worker_CPU"] for n in nodes)
    if fits and total.get("GPU", 0) >= need["GPU"] and total.get("CPU", 0) >= need["CPU"]:
        return
    have = f"{total.get('GPU', 0):g} GPU(s) and {total.get('CPU', 0):g} CPU(s)"
    ask = (f"{need['GPU']:g} GPU(s) and {need['CPU']:g} CPU(s) (resources.workers={spec['resources']['workers']}, "
           f"gpus_per_worker={spec['resources']['gpus_per_worker']}, cpus_per_worker="
           f"{spec['resources']['cpus_per_worker']})")
    if can_grow:
        log.warning("each trial of %s asks for %s; the cluster has %s now and must autoscale before any trial runs",
                    spec.name, ask, have)
        return
    raise ConfigError(
        f"{spec.source}: each trial asks for {ask}, but the Ray cluster has {have}"
        f"{'' if address else ' (a local Ray on this machine)'} and cannot grow, so no trial would ever start. "
        "Run the CPU profile with --quick, or train on CPUs with --set resources.gpus_per_worker=0, or give "
        "--address of a Ray cluster with GPU nodes (e.g. clusters/aws.yaml).")
