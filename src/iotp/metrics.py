"""Prometheus metrics.

- The worker serves its own ``/metrics`` on ``IOTP_METRICS_PORT`` (a small HTTP server
  thread of prometheus-client). Counters are read from the worker's state at scrape
  time, so the hot path pays nothing for them; only batch sizes and latencies are
  observed, once per stored batch.
- The API serves ``GET /metrics`` (viewer role: scrape with an API key as bearer token):
  its own WebSocket and MQTT state, plus fleet-wide figures from the database (devices
  by status, every live worker's counters), so one scrape target gives the overview.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from iotp.worker.service import Worker

BATCH_ROWS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _WorkerCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        c = w.ingestor.counters
        yield _counter("iotp_messages_received", "Device messages received", c.received)
        yield _counter("iotp_messages_stored", "Telemetry rows newly stored", c.stored)
        yield _counter(
            "iotp_messages_duplicate", "Redelivered telemetry already stored", c.duplicates
        )
        rejected = CounterMetricFamily(
            "iotp_messages_rejected", "Rejected messages by reason", labels=["reason"]
        )
        for reason, n in sorted(c.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield _counter("iotp_ts_replaced", "Samples whose device clock was replaced", c.ts_replaced)
        batcher = w.ingestor.batcher
        yield _gauge(
            "iotp_ingest_pending_rows",
            "Telemetry rows received, not yet committed (their PUBACKs wait)",
            batcher.pending_rows,
        )
        failing = batcher.failing_since
        yield _gauge(
            "iotp_storage_failing_seconds",
            "How long storing telemetry has been failing (0: healthy)",
            time.time() - failing if failing else 0.0,
        )
        yield _gauge(
            "iotp_control_writes_pending",
            "Registrations, presence and state writes queued",
            w.ingestor._jobs.qsize(),
        )
        yield _gauge("iotp_mqtt_connected", "1 when connected to the broker", w.link.is_connected)
        leader = w.ingestor.presence_owner
        yield _gauge("iotp_worker_leader", "1 on the worker that owns presence", leader)
        tracked = w.ingestor.presence.devices
        yield _gauge("iotp_devices_tracked", "Devices this worker tracks", len(tracked))
        if leader:
            online = sum(1 for d in tracked.values() if d.status.value == "online")
            yield _gauge("iotp_devices_online", "Devices online (leader's view)", online)
        commands = CounterMetricFamily(
            "iotp_commands", "Device commands by outcome", labels=["outcome"]
        )
        control = getattr(w, "control", None)  # device control, when the worker has it
        if control is not None:
            for outcome, n in sorted(control.snapshot().items()):
                commands.add_metric([outcome], n)
        yield commands


class WorkerMetrics:
    def __init__(self, worker: Worker) -> None:
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
        self.registry.register(_WorkerCollector(worker))
        ProcessCollector(registry=self.registry)
        self._server: WSGIServer | None = None

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_seconds.observe(seconds)

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


def render_api_metrics(
    *,
    ws_clients: int,
    ws_dropped: int,
    mqtt_connected: bool,
    fleet: dict[str, Any],
    by_status: dict[str, int],
    credentials: dict[str, int] | None = None,
    provisioning_conflicts: int = 0,
) -> tuple[bytes, str]:
    """The API's scrape: this process, plus fleet-wide figures from the database."""
    registry = CollectorRegistry(auto_describe=True)

    class _Api(Collector):
        def collect(self) -> Iterator[Metric]:
            yield _gauge("iotp_websocket_clients", "WebSocket clients of this API", ws_clients)
            yield _counter(
                "iotp_websocket_dropped", "Events dropped for slow WebSocket clients", ws_dropped
            )
            yield _gauge("iotp_mqtt_connected", "1 when connected to the broker", mqtt_connected)
            devices = GaugeMetricFamily("iotp_devices", "Devices by status", labels=["status"])
            for status, n in sorted(by_status.items()):
                devices.add_metric([status], n)
            yield devices
            yield _gauge("iotp_fleet_devices_online", "Devices online", by_status.get("online", 0))
            yield _gauge("iotp_fleet_workers", "Live workers", fleet["workers"])
            yield _gauge("iotp_fleet_api_instances", "Live API processes", fleet["api_instances"])
            yield _gauge(
                "iotp_fleet_ingest_rate",
                "Rows stored per second, all workers",
                fleet["ingest_rate"],
            )
            yield _counter(
                "iotp_fleet_messages_received",
                "Messages received, all workers",
                fleet["messages_received"],
            )
            yield _counter(
                "iotp_fleet_messages_stored", "Rows stored, all workers", fleet["messages_stored"]
            )
            rejected = CounterMetricFamily(
                "iotp_fleet_messages_rejected", "Rejected, all workers", labels=["reason"]
            )
            for reason, n in sorted(fleet["rejected_by_reason"].items()):
                rejected.add_metric([reason], n)
            yield rejected
            accounts = GaugeMetricFamily(
                "iotp_device_credentials", "Device MQTT credentials by status", labels=["status"]
            )
            for status, n in sorted((credentials or {}).items()):
                accounts.add_metric([status], n)
            yield accounts
            yield _counter(
                "iotp_provisioning_conflicts",
                "Provisioning requests refused: another secret held the id (alerted)",
                provisioning_conflicts,
            )

    registry.register(_Api())
    ProcessCollector(registry=registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
