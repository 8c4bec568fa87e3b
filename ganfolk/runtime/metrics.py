"""Prometheus metrics: RPC counts and latencies, task durations, consumer lag."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter("ganfolk_rpc_requests_total", "gRPC requests handled", ["service", "method", "code"])
RPC_LATENCY = Histogram(
    "ganfolk_rpc_latency_seconds",
    "gRPC handler latency",
    ["service", "method"],
    buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
TASKS = Counter("ganfolk_tasks_total", "Stage tasks by outcome", ["stage", "outcome"])
TASK_DURATION = Histogram(
    "ganfolk_task_duration_seconds",
    "Stage task duration",
    ["stage", "outcome"],
    buckets=(0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
CONSUMER_PENDING = Gauge(
    "ganfolk_consumer_pending_messages", "Messages not yet delivered to the consumer", ["stream", "consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    "ganfolk_consumer_ack_pending_messages", "Messages delivered but not acked", ["stream", "consumer"]
)
MODEL_READY = Gauge("ganfolk_model_ready", "1 once the service's model is loaded", ["service"])


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serve /metrics on a background thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_address[1])
