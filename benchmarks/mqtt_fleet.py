"""``simulate --via mqtt``: connections one process holds, and its CPU and memory per 1,000.

Starts mosquitto with mutual TLS on 127.0.0.1 (``max_connections -1``; the open-file limit is
raised to its hard limit for mosquitto and the fleet), runs ``alleycat simulate --via mqtt`` for
``--duration`` seconds at each ``--riders`` count, and prints, from ``--json`` and from sampling
the process: connections opened, messages acknowledged, publish-to-PUBACK p50/p99, the share of
one core the fleet used once every rider was connected, and its peak RSS.

Usage::

    .venv/bin/python -m benchmarks.mqtt_fleet --riders 1000 5000 10000 --duration 60
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import DevPki, device_paths, make_dev_pki
from benchmarks.command import alleycat_command, free_port


def run(riders: int, duration: float, connect_rate: float, pki: DevPki, port: int) -> None:
    cert, key = device_paths(pki.directory, "alleycat-fleet")
    command = [
        *alleycat_command(), "simulate", "--via", "mqtt", "--riders", str(riders),
        "--duration", str(int(duration)), "--mqtt-port", str(port),
        "--ca", str(pki.ca_cert), "--cert", str(cert), "--key", str(key),
        "--connect-rate", str(connect_rate), "--json", "--seed", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    connected_at = time.monotonic() + riders / connect_rate + 5  # all connected, and settled
    cpu_from: float | None = None
    measured_from = 0.0
    cpu_to = 0.0
    measured_to = 0.0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
            now = time.monotonic()
            if cpu_from is None and now >= connected_at:
                cpu_from, measured_from = sum(watched.cpu_times()[:2]), now
            elif cpu_from is not None:
                cpu_to, measured_to = sum(watched.cpu_times()[:2]), now
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    stdout, stderr = process.communicate()
    summary = json.loads(stdout)
    cpu = (cpu_to - cpu_from) / (measured_to - measured_from) if cpu_from is not None else 0.0
    latency = summary["puback_latency_ms"]
    print(
        f"riders {riders:,}: connections {summary['connects']:,} (failed attempts "
        f"{summary['connect_failures']:,}), acked {summary['acked']:,} of "
        f"{summary['generated']:,}, dropped {summary['dropped']:,}; PUBACK p50 "
        f"{latency['p50']:.0f} ms p99 {latency['p99']:.0f} ms; connect p50 "
        f"{summary['connect_ms']['p50']:.0f} ms"
    )
    print(
        f"  CPU {cpu:.1%} of a core once connected ({cpu / riders * 1000:.1%} per 1,000); "
        f"peak RSS {peak / 2**20:,.0f} MiB ({peak / 2**20 / riders * 1000:,.0f} MiB per 1,000)"
    )
    if summary["connect_failure_reasons"]:
        print(f"  failures: {summary['connect_failure_reasons'][:2]} {stderr[-300:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, nargs="+", default=[1000])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--connect-rate", type=float, default=500.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="alleycat-bench-") as scratch:
        work = Path(scratch)
        pki = make_dev_pki(work / "pki", ["alleycat-fleet"])
        port = free_port()
        with (work / "mosquitto.log").open("ab") as log:
            broker = MosquittoBroker(
                pki, port=port, log=log,
                extra_config=["max_connections -1", "max_queued_messages 1000000"],
            )  # fmt: skip
            broker.start()
            try:
                print(f"open-file limit {hard:,}; connect rate {args.connect_rate:.0f}/s")
                for riders in args.riders:
                    run(riders, args.duration, args.connect_rate, pki, port)
            finally:
                broker.stop()


if __name__ == "__main__":
    main()
