"""The rider agent's footprint: memory, CPU and send-time jitter over a ride.

Starts a mutual-TLS mosquitto on 127.0.0.1 (development PKI made in a temporary directory), runs
``alleycat ride --sensor mock`` against it for ``--duration`` seconds, and prints:

- resident memory of the agent process (peak of samples every 5 s, and at the end);
  Linux only: memory and CPU time are read from ``/proc``;
- CPU time of the agent as a fraction of one core, steady state (after connecting and a short
  warm-up) and overall (imports and TLS handshake included);
- send-time lateness against the whole-second deadlines, as the agent measures it (from its
  ``stopped`` log line: the moment the publish was handed to the MQTT client), and end to end
  as a subscriber on the same machine receives the messages (``CLOCK_MONOTONIC`` is shared by
  all processes, and the deadlines are whole seconds of it).

Usage::

    .venv/bin/python -m benchmarks.agent_footprint --duration 300 --qos 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import make_dev_pki
from benchmarks.command import alleycat_command, free_port

WARM_UP = 5.0


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time of all of a process's threads, to the nanosecond (``schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
    return total / 1e9


class TimedSubscriber:
    """An MQTT5 subscriber recording the monotonic time each message arrives."""

    def __init__(self, port: int, pki_dir: Path, ca: Path, topic: str) -> None:
        from awscrt import mqtt5
        from awsiot import mqtt5_client_builder

        self.arrivals: list[tuple[float, bytes]] = []
        connected = threading.Event()
        self._stopped = threading.Event()
        self._client = mqtt5_client_builder.mtls_from_path(
            endpoint="127.0.0.1",
            port=port,
            cert_filepath=str(pki_dir / "devices" / "observer.crt"),
            pri_key_filepath=str(pki_dir / "devices" / "observer.key"),
            ca_filepath=str(ca),
            client_id="observer",
            enable_metrics_collection=False,
            on_publish_received=lambda data: self.arrivals.append(
                (time.monotonic(), bytes(data.publish_packet.payload))
            ),
            on_lifecycle_connection_success=lambda _data: connected.set(),
            on_lifecycle_stopped=lambda _data: self._stopped.set(),
        )
        self._client.start()
        if not connected.wait(10):
            raise RuntimeError("the observer could not connect")
        subscribe = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS.AT_LEAST_ONCE)]
        )
        self._client.subscribe(subscribe).result(10)

    def stop(self) -> None:
        self._client.stop()
        self._stopped.wait(5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def read_lines(stream: Any, lines: list[dict[str, Any]], connected: threading.Event) -> None:
    for line in stream:
        event = json.loads(line)
        lines.append(event)
        if event["message"] == "connected":
            connected.set()


def measure(duration: float, qos: int, workdir: Path) -> dict[str, Any]:
    pki = make_dev_pki(workdir / "pki", ["bike-1", "observer"])
    port = free_port()
    log = (workdir / "mosquitto.log").open("ab")
    broker = MosquittoBroker(pki, port=port, log=log)
    broker.start()
    subscriber = None
    process = None
    try:
        subscriber = TimedSubscriber(port, pki.directory, pki.ca_cert, "alleycat-publish")
        cert, key = pki.client("bike-1")
        # Run the agent as installed: one Python process with the alleycat command.
        launched = time.monotonic()
        process = subprocess.Popen(
            [*alleycat_command(), "ride", "--endpoint", "127.0.0.1",
             "--port", str(port), "--cert", str(cert), "--key", str(key),
             "--ca", str(pki.ca_cert), "--client-id", "bike-1", "--racer-id", "101",
             "--name", "Bench", "--qos", str(qos), "--spool", str(workdir / "spool.db"),
             "--sensor", "mock", "--seed", "1", "--log-format", "json"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        lines: list[dict[str, Any]] = []
        connected = threading.Event()
        reader = threading.Thread(
            target=read_lines, args=(process.stdout, lines, connected), daemon=True
        )
        reader.start()
        if not connected.wait(30):
            raise RuntimeError(f"the agent did not connect: {lines}")
        pid = process.pid
        started = time.monotonic()
        time.sleep(WARM_UP)
        cpu_start = cpu_seconds(pid)
        steady_start = time.monotonic()
        rss_peak = 0
        while time.monotonic() - started < duration:
            rss_peak = max(rss_peak, rss_bytes(pid))
            time.sleep(min(5.0, max(0.0, duration - (time.monotonic() - started))))
        rss_end = rss_bytes(pid)
        rss_peak = max(rss_peak, rss_end)
        cpu_end = cpu_seconds(pid)
        steady = time.monotonic() - steady_start
        lifetime = time.monotonic() - launched
        process.send_signal(signal.SIGTERM)
        status = process.wait(30)
        reader.join(5)
        stopped = next(line for line in lines if line["message"] == "stopped")
        final = next(line for line in lines if line["message"] == "stopping")["final_uuid"]
        # The final message is sent when the agent is stopped, not at a deadline.
        arrivals = [
            t - math.floor(t)
            for t, payload in subscriber.arrivals
            if json.loads(payload)["uuid"] != final
        ]
        return {
            "duration_s": duration,
            "qos": qos,
            "exit_status": status,
            "rss_peak_mb": round(rss_peak / 2**20, 1),
            "rss_end_mb": round(rss_end / 2**20, 1),
            "cpu_steady_fraction_of_core": round((cpu_end - cpu_start) / steady, 5),
            "cpu_overall_fraction_of_core": round(cpu_end / lifetime, 5),
            "cpu_seconds_total": round(cpu_end, 3),
            "agent_lateness_p50_ms": stopped["lateness_p50_ms"],
            "agent_lateness_p99_ms": stopped["lateness_p99_ms"],
            "agent_lateness_max_ms": stopped["lateness_max_ms"],
            "received": len(subscriber.arrivals),
            "produced": stopped["produced"],
            "acked": stopped["acked"],
            "missed_ticks": stopped["missed_ticks"],
            "end_to_end_p50_ms": round(percentile(arrivals, 0.5) * 1000, 2),
            "end_to_end_p99_ms": round(percentile(arrivals, 0.99) * 1000, 2),
        }
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if subscriber is not None:
            subscriber.stop()
        broker.stop()
        log.close()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds to ride [300]")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS [1]")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="alleycat-bench-") as workdir:
        figures = measure(args.duration, args.qos, Path(workdir))
    if args.json:
        print(json.dumps(figures))
        return
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    if os.environ.get("ALLEYCAT_BENCH_STRICT"):
        assert figures["rss_peak_mb"] <= 30 and figures["cpu_steady_fraction_of_core"] < 0.001


if __name__ == "__main__":
    main()
