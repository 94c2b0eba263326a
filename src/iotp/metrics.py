"""Prometheus metrics: the helpers, and the API's scrape.

- The worker serves its own ``/metrics`` on ``IOTP_METRICS_PORT`` (a small HTTP server
  thread of prometheus-client). Counters are read from the worker's state at scrape
  time, so the hot path pays nothing for them; only batch sizes and latencies are
  observed, once per stored batch (iotp.worker.metrics).
- The API serves ``GET /metrics`` (viewer role: scrape with an API key as bearer token):
  its own WebSocket and MQTT state, plus fleet-wide figures from the database (devices
  by status, every live worker's counters), so one scrape target gives the overview.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


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
            yield gauge("iotp_websocket_clients", "WebSocket clients of this API", ws_clients)
            yield counter(
                "iotp_websocket_dropped", "Events dropped for slow WebSocket clients", ws_dropped
            )
            yield gauge("iotp_mqtt_connected", "1 when connected to the broker", mqtt_connected)
            devices = GaugeMetricFamily("iotp_devices", "Devices by status", labels=["status"])
            for status, n in sorted(by_status.items()):
                devices.add_metric([status], n)
            yield devices
            yield gauge("iotp_fleet_devices_online", "Devices online", by_status.get("online", 0))
            yield gauge("iotp_fleet_workers", "Live workers", fleet["workers"])
            yield gauge("iotp_fleet_api_instances", "Live API processes", fleet["api_instances"])
            yield gauge(
                "iotp_fleet_ingest_rate",
                "Rows stored per second, all workers",
                fleet["ingest_rate"],
            )
            yield counter(
                "iotp_fleet_messages_received",
                "Messages received, all workers",
                fleet["messages_received"],
            )
            yield counter(
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
            yield counter(
                "iotp_provisioning_conflicts",
                "Provisioning requests refused: another secret held the id (alerted)",
                provisioning_conflicts,
            )

    registry.register(_Api())
    ProcessCollector(registry=registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
