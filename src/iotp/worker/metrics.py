"""The worker's Prometheus metrics (served on IOTP_METRICS_PORT)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from iotp.metrics import counter, gauge

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from iotp.mqtt import MqttLink
    from iotp.worker.control import ControlPlane
    from iotp.worker.ingest import Ingestor

BATCH_ROWS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _WorkerCollector(Collector):
    def __init__(self, ingestor: Ingestor, link: MqttLink, control: ControlPlane) -> None:
        self.ingestor = ingestor
        self.link = link
        self.control = control

    def collect(self) -> Iterator[Metric]:
        ingestor = self.ingestor
        c = ingestor.counters
        yield counter("iotp_messages_received", "Device messages received", c.received)
        yield counter("iotp_messages_stored", "Telemetry rows newly stored", c.stored)
        yield counter(
            "iotp_messages_duplicate", "Redelivered telemetry already stored", c.duplicates
        )
        rejected = CounterMetricFamily(
            "iotp_messages_rejected", "Rejected messages by reason", labels=["reason"]
        )
        for reason, n in sorted(c.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield counter("iotp_ts_replaced", "Samples whose device clock was replaced", c.ts_replaced)
        batcher = ingestor.batcher
        yield gauge(
            "iotp_ingest_pending_rows",
            "Telemetry rows received, not yet committed (their PUBACKs wait)",
            batcher.pending_rows,
        )
        failing = batcher.failing_since
        yield gauge(
            "iotp_storage_failing_seconds",
            "How long storing telemetry has been failing (0: healthy)",
            time.time() - failing if failing else 0.0,
        )
        yield gauge(
            "iotp_control_writes_pending",
            "Registrations, presence and state writes queued",
            ingestor._jobs.qsize(),
        )
        yield gauge("iotp_mqtt_connected", "1 when connected to the broker", self.link.is_connected)
        leader = ingestor.ownership.owned
        yield gauge("iotp_worker_leader", "1 on the worker that owns presence", leader)
        tracked = ingestor.presence.devices
        yield gauge("iotp_devices_tracked", "Devices this worker tracks", len(tracked))
        if leader:
            online = sum(1 for d in tracked.values() if d.status.value == "online")
            yield gauge("iotp_devices_online", "Devices online (leader's view)", online)
        commands = CounterMetricFamily(
            "iotp_commands", "Device commands by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(self.control.snapshot().items()):
            commands.add_metric([outcome], n)
        yield commands


class BatchMetrics:
    """The registry and the per-batch histograms: made before the ingest path, which
    reports every committed batch to ``observe``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_rows = Histogram(
            "iotp_batch_rows",
            "Rows per committed telemetry batch",
            buckets=BATCH_ROWS_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "iotp_batch_seconds",
            "Time to commit one telemetry batch, retries included",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=self.registry,
        )

    def observe(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_seconds.observe(seconds)


class WorkerMetrics:
    """Everything the worker exports: the batch histograms, plus what is read from the
    finished parts at each scrape."""

    def __init__(
        self, batches: BatchMetrics, ingestor: Ingestor, link: MqttLink, control: ControlPlane
    ) -> None:
        self.registry = batches.registry
        self.registry.register(_WorkerCollector(ingestor, link, control))
        ProcessCollector(registry=self.registry)
        self._server: WSGIServer | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> None:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
