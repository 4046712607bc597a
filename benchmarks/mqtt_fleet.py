"""``simulate --via mqtt``: connections one process holds, and its CPU and memory per 1,000.

Starts ``--brokers`` mosquitto instances with mutual TLS on 127.0.0.1 (``max_connections -1``;
the open-file limit is raised to its hard limit for them and the fleet), runs ``alleycat
simulate --via mqtt`` (QoS 1, a message a second per rider, riders dealt over the brokers) for
``--duration`` seconds (from a ``--start-time`` when all can be connected) at each ``--riders``
count with each ``--clients`` connection layer
(``fleet``: the fleet's own; ``awscrt``: an awscrt client per rider, as before), and prints, from
``--json`` and from sampling the processes: connections opened, messages acknowledged, connect
time and publish-to-PUBACK p50/p99, the share of one core the fleet and the brokers used once
every rider was connected, the fleet's peak RSS, and the load average around each run.

Usage::

    .venv/bin/python -m benchmarks.mqtt_fleet --riders 2000 --clients fleet awscrt --duration 60
    .venv/bin/python -m benchmarks.mqtt_fleet --riders 19000 --duration 300
    .venv/bin/python -m benchmarks.mqtt_fleet --riders 2000 --clients --locust-workers 1 2
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
from benchmarks.command import alleycat_command, free_port, load_average


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def system_seconds(process: psutil.Process) -> float:
    """CPU seconds in the kernel (its sends and receives on the loopback, mostly)."""
    return float(process.cpu_times().system)


def run(
    riders: int, client: str, args: argparse.Namespace, pki: DevPki, ports: list[int]
) -> tuple[float, float] | None:
    """One run; its CPU share and RSS once connected (None: it failed)."""
    cert, key = device_paths(pki.directory, "alleycat-fleet")
    endpoints = ",".join(f"127.0.0.1:{port}" for port in ports)
    command = [
        *alleycat_command(), "simulate", "--via", "mqtt", "--riders", str(riders),
        "--duration", str(int(args.duration)), "--mqtt-endpoint", endpoints,
        "--ca", str(pki.ca_cert), "--cert", str(cert), "--key", str(key),
        "--connect-rate", str(args.connect_rate), "--json", "--seed", "1",
        "--mqtt-client", client,
    ]  # fmt: skip
    # The riders start riding once every one could have connected: the figures are those of a
    # connected fleet, not of riders holding messages while the others connect.
    connecting = riders / args.connect_rate + 10
    command += ["--start-time", f"{time.time() + connecting:.3f}"]
    brokers = [psutil.Process(pid) for pid in args.broker_pids]
    load_before = load_average()
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = riding_rss = 0
    connected_at = started + connecting + 5  # all connected, and riding for a while
    ends_at = started + connecting + args.duration - 2  # before the drain and the goodbyes
    window: dict[str, float] = {}
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
            now = time.monotonic()
            if "from" not in window and now >= connected_at:
                window["from"] = now
                window["cpu_from"] = cpu_seconds(watched)
                window["system_from"] = system_seconds(watched)
                window["brokers_from"] = sum(cpu_seconds(b) for b in brokers)
            elif "from" in window and now <= ends_at:
                window["to"] = now
                window["cpu_to"] = cpu_seconds(watched)
                window["system_to"] = system_seconds(watched)
                riding_rss = max(riding_rss, watched.memory_info().rss)
                window["brokers_to"] = sum(cpu_seconds(b) for b in brokers)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    stdout, stderr = process.communicate()
    load_after = load_average()
    try:
        summary = json.loads(stdout)
    except json.JSONDecodeError:
        print(f"{client} {riders:,}: no summary (exit {process.returncode}): {stderr[-500:]}")
        return None
    seconds = window.get("to", 0.0) - window.get("from", 0.0)
    cpu = (window["cpu_to"] - window["cpu_from"]) / seconds if seconds > 0 else 0.0
    system = (window["system_to"] - window["system_from"]) / seconds if seconds > 0 else 0.0
    broker_cpu = (window["brokers_to"] - window["brokers_from"]) / seconds if seconds > 0 else 0.0
    puback = summary["puback_latency_ms"]
    connect = summary["connect_ms"]
    print(
        f"{client} {riders:,} riders over {len(ports)} brokers: connections "
        f"{summary['connects']:,} (failed attempts {summary['connect_failures']:,}, reconnects "
        f"{summary['reconnects']:,}); acked {summary['acked']:,} of {summary['generated']:,}, "
        f"dropped {summary['dropped']:,}, in flight {summary['in_flight']:,}, held "
        f"{summary['held']:,}"
    )
    print(
        f"  connect p50 {connect['p50']:.0f} ms p99 {connect['p99']:.0f} ms; PUBACK p50 "
        f"{puback['p50']:.0f} ms p99 {puback['p99']:.0f} ms"
    )
    print(
        f"  fleet CPU {cpu:.1%} of a core over {seconds:.0f} s once connected "
        f"({cpu / riders * 1000:.2%} per 1,000; in the kernel {system:.1%}); brokers "
        f"{broker_cpu:.1%} of a core"
    )
    print(
        f"  fleet RSS once connected {riding_rss / 2**20:,.0f} MiB "
        f"({riding_rss / 2**20 / riders * 1000:,.1f} MiB per 1,000), peak while connecting "
        f"{peak / 2**20:,.0f} MiB"
    )
    print(f"  load average before {load_before}, after {load_after}")
    if summary["connect_failure_reasons"]:
        print(f"  failures: {summary['connect_failure_reasons'][:2]} {stderr[-300:]}")
    return cpu, riding_rss


def print_marginal(client: str, results: list[tuple[int, float, float]]) -> None:
    """What 1,000 riders more cost, between the fewest and the most riders run (the process's
    own fixed cost, the interpreter and the rider model's tables, left out)."""
    (low, low_cpu, low_rss), (high, high_cpu, high_rss) = min(results), max(results)
    if high > low:
        per = 1000 / (high - low)
        print(
            f"{client}, 1,000 riders more (between {low:,} and {high:,}): "
            f"{(high_cpu - low_cpu) * per:.2%} of a core, {(high_rss - low_rss) * per / 2**20:.1f} "
            "MiB of RSS"
        )


def run_locust(
    riders: int, workers: int, args: argparse.Namespace, pki: DevPki, ports: list[int]
) -> None:
    """``alleycat locust --via mqtt --processes WORKERS`` with ``riders`` users (a rider each):
    the workers' CPU once connected, their peak RSS, and the master's summary."""
    cert, key = device_paths(pki.directory, "alleycat-fleet")
    endpoints = ",".join(f"127.0.0.1:{port}" for port in ports)
    master_port = free_port()
    with tempfile.TemporaryDirectory(prefix="alleycat-locust-") as scratch:
        summary_path = Path(scratch) / "summary.json"
        command = [
            *alleycat_command(), "locust", "--via", "mqtt", "--headless",
            "--processes", str(workers), "-u", str(riders), "-r", str(args.connect_rate),
            "-t", f"{int(args.duration)}s", "--mqtt-endpoint", endpoints,
            "--ca", str(pki.ca_cert), "--cert", str(cert), "--key", str(key),
            "--connect-rate", str(args.connect_rate), "--summary-json", str(summary_path),
            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
            "--master-host", "127.0.0.1", "--master-port", str(master_port),
            "--loglevel", "WARNING",
        ]  # fmt: skip
        load_before = load_average()
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        master = psutil.Process(process.pid)
        connected_at = started + riders / args.connect_rate + 15
        ends_at = started + args.duration - 2
        window: dict[str, float] = {}
        peak = 0
        while process.poll() is None:
            try:
                children = master.children()
                peak = max([peak, *(c.memory_info().rss for c in children)])
                now = time.monotonic()
                used = sum(cpu_seconds(c) for c in children)
                if "from" not in window and now >= connected_at:
                    window["from"], window["cpu_from"] = now, used
                elif "from" in window and now <= ends_at:
                    window["to"], window["cpu_to"] = now, used
            except psutil.NoSuchProcess:
                pass
            time.sleep(1.0)
        _out, err = process.communicate()
        load_after = load_average()
        if not summary_path.exists():
            print(f"locust {workers} workers: no summary: {err[-500:]!r}")
            return
        summary = json.loads(summary_path.read_text())
    seconds = window.get("to", 0.0) - window.get("from", 0.0)
    cpu = (window["cpu_to"] - window["cpu_from"]) / seconds if seconds > 0 else 0.0
    print(
        f"locust --processes {workers}: {summary['riders']:,} riders, connections "
        f"{summary['connects']:,}; acked {summary['acked']:,} of {summary['generated']:,}, "
        f"lost {summary['lost']:,}; PUBACK p50 {summary['puback_latency_ms']['p50']:.0f} ms "
        f"p99 {summary['puback_latency_ms']['p99']:.0f} ms"
    )
    print(
        f"  workers' CPU {cpu:.1%} of a core over {seconds:.0f} s once connected "
        f"({cpu / max(1, summary['riders']) * 1000:.2%} per 1,000 riders); largest worker RSS "
        f"{peak / 2**20:,.0f} MiB; load average before {load_before}, after {load_after}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, nargs="+", default=[1000])
    parser.add_argument("--clients", nargs="*", choices=["fleet", "awscrt"], default=["fleet"])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--connect-rate", type=float, default=500.0)
    parser.add_argument("--brokers", type=int, default=2)
    parser.add_argument(
        "--locust-workers",
        type=int,
        nargs="*",
        default=[],
        help="also run `alleycat locust --via mqtt --processes W` with W times --riders riders",
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="alleycat-bench-") as scratch:
        work = Path(scratch)
        pki = make_dev_pki(work / "pki", ["alleycat-fleet"])
        ports = [free_port() for _ in range(args.brokers)]
        with (work / "mosquitto.log").open("ab") as log:
            brokers = [
                MosquittoBroker(
                    pki,
                    port=port,
                    log=log,
                    extra_config=["max_connections -1", "max_queued_messages 1000000"],
                )  # fmt: skip
                for port in ports
            ]
            try:
                for broker in brokers:
                    broker.start()
                args.broker_pids = [broker.pid for broker in brokers if broker.pid is not None]
                print(
                    f"open-file limit {hard:,}; connect rate {args.connect_rate:.0f}/s; "
                    f"{args.duration:.0f} s a run; QoS 1, mutual TLS, a message a second a rider"
                )
                measured: dict[str, list[tuple[int, float, float]]] = {}
                for riders in args.riders:
                    for client in args.clients:
                        result = run(riders, client, args, pki, ports)
                        if result is not None:
                            measured.setdefault(client, []).append((riders, *result))
                    for workers in args.locust_workers:
                        run_locust(riders * workers, workers, args, pki, ports)
                for client, results in measured.items():
                    print_marginal(client, results)
            finally:
                for broker in brokers:
                    broker.stop()


if __name__ == "__main__":
    main()
