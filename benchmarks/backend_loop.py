"""The local backend under load: how fast the rule carries messages, and what the loop costs.

Starts, on 127.0.0.1: mosquitto as ``alleycat stack`` configures it (mutual TLS, its ACL and
limits), a Kinesis server (moto's, or kinesalite from ``tests/servers/kinesalite``), and
``alleycat rule`` and ``alleycat standings`` as their own processes. Then, by ``--mode``:

- ``throughput``: ``--messages`` QoS 1 messages are published while the rule is stopped (they
  wait in its persistent session), the rule is started, and the time from its start to the last
  message written is measured: messages/s from mosquitto into the stream.
- ``fleet``: ``--riders`` riders publish one ride message a second each (100 riders per
  connection, IoT Core's per-connection limit) for ``--duration`` seconds. Prints the CPU (share
  of one core) and peak RSS of the rule and of the standings backend, after a warm-up, and the
  latency from a message's ``deviceTimestamp`` to the first results message that shows the best
  output it set, p50/p99, as a rider subscribed to the results topic receives it.

Usage::

    .venv/bin/python -m benchmarks.backend_loop --mode throughput --kinesis moto
    .venv/bin/python -m benchmarks.backend_loop --mode fleet --riders 1000 --duration 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from alleycat_rider.core.message import MessageEncoder, RideEvent, RiderIdentity, output, race_id
from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import DevPki, device_paths, make_dev_pki
from alleycat_rider.mqtt import MqttLink, MqttSettings, PublishDone, Received
from benchmarks.command import alleycat_command, free_port
from simulator.backend.acl import RULE_CLIENT_ID, STANDINGS_CLIENT_ID, acl
from simulator.backend.net import wait_for_port
from simulator.backend.stack import BROKER_LIMITS

KINESALITE = Path(__file__).resolve().parent.parent / "tests" / "servers" / "kinesalite"
RIDERS_PER_CONNECTION = 100
WARM_UP = 10.0
#: Seconds without a record written before the throughput run gives up.
STALL = 30.0


def kinesis_server(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "moto":
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        command = [shutil.which("node") or "node", str(KINESALITE / "serve.js"), str(port)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=KINESALITE
    )
    try:
        if not wait_for_port("127.0.0.1", port, 30.0, alive=process):
            raise RuntimeError(f"{kind} did not start on {port}")
    except BaseException:  # not started, or stopped while starting (SIGTERM)
        process.kill()
        process.wait()
        raise
    return process


class Publisher:
    """One device connection, publishing QoS 1 and counting acknowledgements."""

    def __init__(self, pki: DevPki, port: int, device: str, on_message: Any = None) -> None:
        cert, key = device_paths(pki.directory, device)
        settings = MqttSettings(
            endpoint="127.0.0.1", port=port, client_id=device, cert=cert, key=key, ca=pki.ca_cert
        )
        self.topic = f"alleycat-publish/{device}"
        """The device's own ride topic: the ACL lets it publish there only, as IoT Core would."""
        self.acked = 0
        self.connected = threading.Event()
        self._on_message = on_message
        self.link = MqttLink(settings, self._event)
        self.link.start()
        if not self.connected.wait(15):
            raise RuntimeError(f"{device} did not connect")

    def _event(self, event: Any) -> None:
        if isinstance(event, PublishDone):
            self.acked += 1
        elif isinstance(event, Received) and self._on_message is not None:
            self._on_message(event.payload)
        elif type(event).__name__ == "Connected":
            self.connected.set()


def start_service(args: list[str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*alleycat_command(), *args],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def options(pki: DevPki, port: int, client_id: str) -> list[str]:
    cert, key = device_paths(pki.directory, client_id)
    return [
        "--mqtt-port", str(port), "--cert", str(cert), "--key", str(key),
        "--ca", str(pki.ca_cert),
    ]  # fmt: skip


def ride_message(encoder: MessageEncoder, second: int, cadence: float, resistance: float) -> bytes:
    now_ms = time.time_ns() // 1_000_000
    return encoder.encode(
        uuid=str(uuid.uuid4()),
        event=RideEvent.UPDATE,
        device_timestamp=now_ms,
        second=second,
        race_id=race_id(now_ms),
        cadence=cadence,
        resistance=resistance,
    )


def throughput(
    args: argparse.Namespace, pki: DevPki, mqtt_port: int, aws: list[str], work: Path
) -> None:
    rule_args = [
        "rule", *options(pki, mqtt_port, RULE_CLIENT_ID), *aws, "--create-stream",
        "--status-interval", "0.2", "--json",
    ]  # fmt: skip
    # A first run makes the stream and the rule's persistent session, then stops.
    first = start_service([*rule_args, "--duration", "3"], work / "rule-first.log")
    first.wait(60)
    publishers = [Publisher(pki, mqtt_port, f"bike-{i}") for i in range(1, 5)]
    encoder = MessageEncoder(RiderIdentity(racer_id=101, name="bench", class_id=1))
    for n in range(args.messages):
        payload = ride_message(encoder, n % 300 + 1, 80.0, 50.0)
        publisher = publishers[n % len(publishers)]
        publisher.link.publish(publisher.topic, payload, 1, n)
    while sum(p.acked for p in publishers) < args.messages:
        time.sleep(0.05)
    for publisher in publishers:
        publisher.link.stop()
    log = work / "rule.log"
    launched = time.perf_counter()
    rule = start_service(rule_args, log)
    first_at = written_at = None
    first_count = last = 0
    pattern = re.compile(r"written ([\d,]+)")
    progressed = time.perf_counter()
    while written_at is None and rule.poll() is None:
        time.sleep(0.02)
        found = [int(m.group(1).replace(",", "")) for m in pattern.finditer(log.read_text())]
        written = max(found, default=0)
        if written > last:
            last, progressed = written, time.perf_counter()
        elif time.perf_counter() - progressed > STALL:
            rule.kill()
            raise SystemExit(f"the rule wrote {written:,} of {args.messages:,} and then nothing "
                             f"for {STALL:.0f} s; its log: {log}")  # fmt: skip
        if first_at is None and written > 0:
            first_at, first_count = time.perf_counter(), written
        if written >= args.messages:
            written_at = time.perf_counter()
    rule.send_signal(signal.SIGTERM)
    counts = json.loads(rule.communicate(timeout=60)[0])
    assert written_at is not None and first_at is not None, log.read_text()[-2000:]
    steady = (args.messages - first_count) / (written_at - first_at)
    print(f"kinesis server: {args.kinesis}")
    print(f"messages: {args.messages:,} queued in the rule's session, then the rule started")
    print(f"written: {counts['written']:,}, {written_at - launched:.1f} s after the rule started")
    print(f"carried: {steady:,.0f} messages/s once writing (status lines every 0.2 s)")
    per_request = counts["written"] / counts["requests"]
    print(f"requests: {counts['requests']:,} ({per_request:.0f} records per request)")


def fleet(
    args: argparse.Namespace, pki: DevPki, mqtt_port: int, aws: list[str], work: Path
) -> None:
    rule = start_service(
        ["rule", *options(pki, mqtt_port, RULE_CLIENT_ID), *aws, "--create-stream",
         "--status-interval", "0", "--json"],
        work / "rule.log",
    )  # fmt: skip
    time.sleep(5)
    standings = start_service(
        ["standings", *options(pki, mqtt_port, STANDINGS_CLIENT_ID), *aws, "--status-interval",
         "0", "--json"],
        work / "standings.log",
    )  # fmt: skip
    time.sleep(5)
    best: dict[int, dict[float, int]] = {}
    shown: dict[tuple[str, str], float] = {}
    latencies: list[int] = []
    lock = threading.Lock()

    def on_results(payload: bytes) -> None:
        now_ms = time.time_ns() // 1_000_000
        message = json.loads(payload)
        results = json.loads(message["results"])
        with lock:
            for racer, value in results.items():
                key = (message["raceId"], racer)
                if shown.get(key) == value:
                    continue
                shown[key] = value
                stamp = best.get(int(racer), {}).get(value)
                if stamp is not None:
                    latencies.append(now_ms - stamp)

    watcher = Publisher(pki, mqtt_port, "bike-watch", on_message=on_results)
    watcher.link.subscribe("alleycat-subscribe")
    connections = (args.riders + RIDERS_PER_CONNECTION - 1) // RIDERS_PER_CONNECTION
    publishers = [Publisher(pki, mqtt_port, f"bike-{i}") for i in range(1, connections + 1)]
    rng = random.Random(1)
    riders = [
        (MessageEncoder(RiderIdentity(racer_id=100 + i, name=f"r{i}", class_id=1 + i % 6)),
         rng.uniform(50, 90), rng.uniform(30, 80))
        for i in range(args.riders)
    ]  # fmt: skip
    processes = {"rule": psutil.Process(rule.pid), "standings": psutil.Process(standings.pid)}
    peak = dict.fromkeys(processes, 0)
    cpu_start: dict[str, float] = {}
    started = time.monotonic()
    published = 0
    for second in range(1, int(args.duration) + 1):
        tick = started + second
        for index, (encoder, cadence, resistance) in enumerate(riders):
            c = max(0.0, cadence + rng.gauss(0, 8))
            r = max(0.0, resistance + rng.gauss(0, 5))
            payload = ride_message(encoder, second, round(c, 1), round(r, 1))
            value = round(output(round(c, 1), round(r, 1)), 4)
            with lock:
                best.setdefault(100 + index, {})[value] = json.loads(payload)["deviceTimestamp"]
            publisher = publishers[index // RIDERS_PER_CONNECTION]
            publisher.link.publish(publisher.topic, payload, 1, published)
            published += 1
        for name, process in processes.items():
            peak[name] = max(peak[name], process.memory_info().rss)
        if not cpu_start and time.monotonic() - started >= WARM_UP:
            cpu_start = {n: sum(p.cpu_times()[:2]) for n, p in processes.items()}
            measured_from = time.monotonic()
        time.sleep(max(0.0, tick - time.monotonic()))
    measured = time.monotonic() - measured_from
    cpu = {n: (sum(p.cpu_times()[:2]) - cpu_start[n]) / measured for n, p in processes.items()}
    time.sleep(3)
    for service in (rule, standings):
        service.send_signal(signal.SIGTERM)
    rule_counts = json.loads(rule.communicate(timeout=60)[0])
    report = json.loads(standings.communicate(timeout=60)[0])
    for publisher in [*publishers, watcher]:
        publisher.link.stop()
    acked = sum(p.acked for p in publishers)
    print(
        f"kinesis server: {args.kinesis}; riders {args.riders:,} for {args.duration:.0f} s, "
        f"{connections} connections"
    )
    print(
        f"published {published:,}, acked {acked:,}; rule received {rule_counts['received']:,}, "
        f"written {rule_counts['written']:,}, error action {rule_counts['error_action']:,}"
    )
    print(
        f"standings read {report['messages']:,} messages, published {report['published']:,} "
        f"results messages for {report['races']} races"
    )
    for name in processes:
        print(
            f"{name}: CPU {cpu[name]:.1%} of a core (after {WARM_UP:.0f} s), "
            f"peak RSS {peak[name] / 2**20:.0f} MiB"
        )
    if latencies:
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"deviceTimestamp -> standings shown: p50 {statistics.median(ordered):.0f} ms, "
            f"p99 {p99} ms over {len(ordered):,} new bests"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["throughput", "fleet"], default="throughput")
    parser.add_argument("--kinesis", choices=["moto", "kinesalite"], default="moto")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--riders", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    # Stopped from outside (a timeout's SIGTERM), still stop the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="alleycat-bench-") as scratch:
        work = Path(scratch)
        devices = [f"bike-{i}" for i in range(1, 12)] + ["bike-watch"]
        pki = make_dev_pki(work / "pki", [*devices, RULE_CLIENT_ID, STANDINGS_CLIENT_ID])
        (work / "acl").write_text(acl("alleycat-publish", "alleycat-subscribe", devices=devices))
        os.chmod(work, 0o755)
        mqtt_port, kinesis_port = free_port(), free_port()
        broker_log = (work / "mosquitto.log").open("ab")
        broker = MosquittoBroker(
            pki, port=mqtt_port, log=broker_log,
            extra_config=[*BROKER_LIMITS, f"acl_file {work / 'acl'}"],
        )  # fmt: skip
        server = None
        try:
            broker.start()
            server = kinesis_server(args.kinesis, kinesis_port)
            aws = ["--stream", "alleycat", "--endpoint-url", f"http://127.0.0.1:{kinesis_port}"]
            if args.mode == "throughput":
                throughput(args, pki, mqtt_port, aws, work)
            else:
                fleet(args, pki, mqtt_port, aws, work)
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)
            broker.stop()
            broker_log.close()


if __name__ == "__main__":
    main()
