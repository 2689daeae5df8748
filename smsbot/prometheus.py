"""The metrics as Prometheus reads them: a registry of this instance's own, its histograms, and a collector that
renders the tallies and the database's gauges at scrape time. Imported only when metrics are on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from . import __version__

if TYPE_CHECKING:
    from .metrics import Metrics, Tally


class Exposition:
    """A registry of its own (several apps in one process never share series)."""

    def __init__(self, metrics: Metrics, webhook_kinds: tuple[str, ...]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhook_seconds = Histogram("smsbot_webhook_seconds", "Time to answer a Vonage webhook.", ["kind"],
                                         registry=self.registry)
        self.send_seconds = Histogram("smsbot_send_seconds", "Time the provider took to take one text.",
                                      registry=self.registry)
        for kind in webhook_kinds:
            self.webhook_seconds.labels(kind)
        self.registry.register(_Collector(metrics))
        ProcessCollector(registry=self.registry)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def family(tally: Tally) -> CounterMetricFamily:
    counter = CounterMetricFamily(tally.name, tally.doc, labels=tally.label_names)
    for values, count in tally.counts.items():
        counter.add_metric(list(values), count)
    return counter


class _Collector(Collector):
    """The tallies, and the gauges of the last database read (none when it failed: no stale figures)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield from (family(t) for t in m.tallies())
        yield _info()
        yield GaugeMetricFamily("smsbot_sender_role_held", "1 when this instance holds the sender's role.",
                                value=1 if m.sender_role() else 0)
        yield GaugeMetricFamily("smsbot_database_up", "1 when the last scrape's database read answered in time.",
                                value=1 if m.figures else 0)
        figures = m.figures
        if figures is None:
            return
        yield GaugeMetricFamily("smsbot_database_read_seconds", "Time the scrape's database read took.",
                                value=m.read_seconds)
        yield GaugeMetricFamily("smsbot_outbox_waiting", "Texts queued and not yet sent (or being sent).",
                                value=figures.waiting)
        oldest = 0.0 if figures.oldest_waiting_at is None else max(0.0, m.clock.now() - figures.oldest_waiting_at)
        yield GaugeMetricFamily("smsbot_outbox_oldest_seconds", "Age of the oldest text waiting (0: none waits).",
                                value=oldest)
        yield GaugeMetricFamily("smsbot_members", "Members of the group.", value=figures.members)
        yield GaugeMetricFamily("smsbot_daily_budget_used", "Texts queued since midnight UTC.",
                                value=figures.queued_today)
        yield GaugeMetricFamily("smsbot_daily_budget", "SMSBOT_DAILY_SMS_BUDGET: texts allowed per UTC day.",
                                value=m.budget)


def _info() -> GaugeMetricFamily:
    info = GaugeMetricFamily("smsbot_build_info", "This instance's smsbot version (always 1).", labels=["version"])
    info.add_metric([__version__], 1)
    return info
