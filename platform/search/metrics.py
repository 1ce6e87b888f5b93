"""Live search metrics for Prometheus/Grafana, exported with ``ray.util.metrics``.

Ray exports application metrics through its per-node metrics agent next to its own
(``ray_node_*``, ``ray_tasks``...), prefixed with ``ray_``; ``dashboards/grafana_search.json``
plots both. The driver's gauges callback (:class:`platform.search.bookkeeping.GaugesCallback`)
updates these gauges as trials start, report and end. Names (as Prometheus sees them)::

    ray_platform_search_trials{search, state}         running | finished | stopped | failed | pending
    ray_platform_search_best_metric{search, metric}   best value of the search metric so far
    ray_platform_search_spend_usd{search}             measured spend (see platform.search.budget)
    ray_platform_search_gpu_hours{search}
    ray_platform_trial_gpu_memory_bytes{search, trial_id, source}   peak (CUDA) or pre-launch estimate
    ray_platform_trial_metric{search, trial_id, metric}             last value of the search metric
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

STATES = ("pending", "running", "finished", "stopped", "failed")


class SearchMetrics:
    """Gauges of one search; every call is a no-op when Ray's metrics are unavailable."""

    def __init__(self, search: str, metric: str):
        self.search, self.metric = search, metric
        self._g = None

    def _gauges(self):
        if self._g is None:
            try:
                from ray.util.metrics import Gauge

                self._g = {
                    "trials": Gauge("platform_search_trials", "trials of a search by state", tag_keys=("search", "state")),
                    "best": Gauge("platform_search_best_metric", "best value of the search metric so far",
                                  tag_keys=("search", "metric")),
                    "spend": Gauge("platform_search_spend_usd", "measured spend of the search in USD",
                                   tag_keys=("search",)),
                    "gpu_hours": Gauge("platform_search_gpu_hours", "GPU hours used by the search",
                                       tag_keys=("search",)),
                    "gpu_mem": Gauge("platform_trial_gpu_memory_bytes", "peak GPU memory of a trial (or its estimate)",
                                     tag_keys=("search", "trial_id", "source")),
                    "trial_metric": Gauge("platform_trial_metric", "last value of the search metric of a trial",
                                          tag_keys=("search", "trial_id", "metric")),
                }
            except Exception as exc:  # Ray not initialised or metrics disabled: tracking goes on without
                log.debug("ray.util.metrics unavailable: %s", exc)
                self._g = {}
        return self._g

    def _set(self, name: str, value: float, **tags) -> None:
        g = self._gauges().get(name)
        if g is None:
            return
        try:
            g.set(float(value), tags={"search": self.search, **{k: str(v) for k, v in tags.items()}})
        except Exception:  # never fail a search over a metric
            log.debug("could not set gauge %s", name, exc_info=True)

    def trials(self, counts: dict[str, int]) -> None:
        for state in STATES:
            self._set("trials", counts.get(state, 0), state=state)

    def best(self, value: float) -> None:
        self._set("best", value, metric=self.metric)

    def spend(self, usd: float, gpu_hours: float) -> None:
        self._set("spend", usd)
        self._set("gpu_hours", gpu_hours)

    def trial_memory(self, trial_id: str, nbytes: float, source: str) -> None:
        self._set("gpu_mem", nbytes, trial_id=trial_id, source=source)

    def trial_metric(self, trial_id: str, value: float) -> None:
        self._set("trial_metric", value, trial_id=trial_id, metric=self.metric)

    def __getstate__(self):
        return {"search": self.search, "metric": self.metric, "_g": None}
