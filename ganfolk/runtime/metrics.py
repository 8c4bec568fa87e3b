"""Prometheus metrics: RPC counts and latencies, task durations, consumer lag, peak memory.

The client library's default collectors already export the current resident memory
(``process_resident_memory_bytes``); the kernel's peak mark is added here, since a
service's high-water mark is what sizes its container. Without Prometheus, the same
figures are in ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), read by :func:`process_memory`.
"""

from __future__ import annotations

from pathlib import Path

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
PEAK_RSS = Gauge("ganfolk_process_peak_resident_memory_bytes", "Peak resident memory of this process (VmHWM)")


def process_memory(pid: int | str = "self") -> dict[str, int]:
    """Resident memory of a process, in bytes: ``rss`` (VmRSS) and ``peak_rss`` (VmHWM).

    Linux only (``/proc``); an empty dict where the figures cannot be read.
    """
    fields = {"VmRSS": "rss", "VmHWM": "peak_rss"}
    out: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, _, value = line.partition(":")
        if name in fields:
            out[fields[name]] = int(value.split()[0]) * 1024  # kB
    return out


PEAK_RSS.set_function(lambda: float(process_memory().get("peak_rss", 0)))


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serve /metrics on a background thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_address[1])
