"""What the fleet's TLS transport costs per connection: CPU and RSS per 1,000 MQTT connections.

The same riders, the same messages, in one process on one uvloop event loop, through two
transports: ``fleet``, the fleet's own link (:class:`simulator.mqtt.wire.Link`: a non-blocking
TLS socket watched by the loop's ``add_reader``, with its reconnects, keep-alive and packet ids),
and ``socket``, the least that can do the same, a bare non-blocking ``ssl.SSLSocket`` per
connection read from the loop's ``add_reader`` (in both, OpenSSL reads and writes the socket
itself): the difference is what the link's own work costs. Starts two mosquitto instances with
mutual TLS on 127.0.0.1, connects ``--riders`` connections dealt over them, then publishes a QoS 1
message a second per connection for ``--seconds`` seconds (the connections' phases spread over
10 ms ticks, as the fleet's timer does) and prints the process's CPU over the riding, per message
and per 1,000 connections, and the RSS each connection added (each transport in a process of its
own). Only the transport differs: no rider model, no fleet bookkeeping
(``benchmarks/mqtt_fleet.py`` measures the whole fleet). ``--tls 1.2`` caps the protocol at
TLS 1.2.

Usage::

    .venv/bin/python -m benchmarks.mqtt_transports --riders 2000 --seconds 30
    .venv/bin/python -m benchmarks.mqtt_transports --riders 2000 --tls 1.2
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mqtt5
import psutil

from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import device_paths, make_dev_pki
from alleycat_rider.mqtt import MqttSettings
from benchmarks.command import free_port, load_average
from simulator.mqtt import connect, wire

TOPIC = "alleycat-publish"
PAYLOAD = b'{"racerId": 100}'.ljust(202, b" ")  # the ride message's size
_READ_VIEW = memoryview(bytearray(64 * 1024))


class Counts:
    """What the connections told (the fleet's :class:`wire.LinkEvents`)."""

    def __init__(self) -> None:
        self.connected = 0
        self.acked = 0
        self.failures: list[str] = []

    def link_connected(self, index: int) -> None:
        self.connected += 1

    def link_failed(self, index: int, message: str, refused: bool) -> None:
        self.failures.append(message)

    def link_lost(self, index: int) -> None:
        self.failures.append(f"connection {index} lost")

    def publish_done(
        self, index: int, token: int, delivered: bool, rejected: bool, code: str
    ) -> None:
        self.acked += delivered


class SocketLink:
    """One connection on a non-blocking ``ssl.SSLSocket``, read from the loop's ``add_reader``."""

    __slots__ = ("sock", "counts", "next_id")

    def __init__(self, sock: ssl.SSLSocket, counts: Counts) -> None:
        self.sock = sock
        self.counts = counts
        self.next_id = 0

    def readable(self) -> None:
        try:
            size = self.sock.recv_into(_READ_VIEW)
        except ssl.SSLWantReadError:
            return
        view = _READ_VIEW[:size]
        offset = 0
        while offset < size:
            try:
                packet, used = mqtt5.read(view[offset:])
            except IndexError:  # not all of it: does not happen with these small packets
                break
            offset += used
            if type(packet) is mqtt5.PubAckPacket:
                self.counts.acked += 1
            elif type(packet) is mqtt5.ConnAckPacket:
                self.counts.connected += 1

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        self.next_id = self.next_id % 65535 + 1
        packet = mqtt5.PublishPacket(
            topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=self.next_id
        )
        self.sock.send(packet.write())

    def stop(self) -> None:
        self.sock.close()


async def connect_all(
    transport: str,
    loop: asyncio.AbstractEventLoop,
    counts: Counts,
    riders: int,
    ports: list[int],
    context: ssl.SSLContext,
    settings: MqttSettings,
) -> list[Any]:
    """Every connection, 50 at a time, each with its CONNACK."""
    links: list[Any] = []
    rng = random.Random(1)
    resolver = connect.Resolver(loop)
    for index in range(riders):
        port = ports[index % len(ports)]
        link: Any
        if transport == "fleet":
            endpoint = connect.Endpoint("127.0.0.1", port)
            link = wire.Link(
                loop, counts, index, f"bench-{index}", endpoint, context, settings.cert,
                settings, rng, resolver,
            )  # fmt: skip
            link.start()
        else:
            plain = socket.create_connection(("127.0.0.1", port))
            plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = context.wrap_socket(plain, server_hostname="127.0.0.1")
            sock.setblocking(False)
            link = SocketLink(sock, counts)
            loop.add_reader(sock.fileno(), link.readable)
            sock.send(mqtt5.ConnectPacket(f"bench-{index}", keep_alive=1200).write())
        links.append(link)
        if index % 50 == 49 or index == riders - 1:
            while counts.connected < index + 1 and not counts.failures:
                await asyncio.sleep(0.01)
    return links


async def ride(links: list[Any], seconds: float) -> tuple[int, float, float]:
    """A message a second per connection, phases over 10 ms ticks: (sent, CPU s, wall s)."""
    started = time.monotonic()
    cpu_from = time.process_time()
    sent = tick = 0
    while time.monotonic() - started < seconds:
        for link in links[tick % 100 :: 100]:
            link.publish(TOPIC, PAYLOAD, 1, sent)
            sent += 1
        tick += 1
        await asyncio.sleep(max(0.0, started + tick * 0.01 - time.monotonic()))
    await asyncio.sleep(0.5)  # the last PUBACKs
    return sent, time.process_time() - cpu_from, time.monotonic() - started


def run(transport: str, args: argparse.Namespace, work: Path) -> None:
    pki = make_dev_pki(work / "pki", ["alleycat-fleet"])
    cert, key = device_paths(pki.directory, "alleycat-fleet")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(str(cert), str(key))
    if args.tls == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    ports = [free_port(), free_port()]
    settings = MqttSettings(endpoint="127.0.0.1", port=ports[0], client_id="", cert=cert, key=key)
    process = psutil.Process()
    with (work / "mosquitto.log").open("ab") as log:
        brokers = [
            MosquittoBroker(pki, port=port, log=log, extra_config=["max_connections -1"])
            for port in ports
        ]
        for broker in brokers:
            broker.start()
        loop = connect.new_event_loop()
        try:
            counts = Counts()
            load_before = load_average()
            gc.collect()
            rss_before = process.memory_info().rss
            links = loop.run_until_complete(
                connect_all(transport, loop, counts, args.riders, ports, context, settings)
            )
            if counts.failures:
                print(f"{transport}: {counts.failures[0]}")
                return
            gc.collect()
            rss_connected = process.memory_info().rss
            acked_before = counts.acked
            sent, cpu, wall = loop.run_until_complete(ride(links, args.seconds))
            share = cpu / wall
            print(
                f"{transport}, TLS {args.tls}, {args.riders:,} connections: sent {sent:,}, acked "
                f"{counts.acked - acked_before:,}; CPU {share:.1%} of a core "
                f"({share / args.riders * 1000:.2%} per 1,000, {cpu / sent * 1e6:.0f} µs a "
                f"message); RSS {(rss_connected - rss_before) / args.riders / 1024:.1f} KiB a "
                f"connection ({process.memory_info().rss / 2**20:.0f} MiB in all); load average "
                f"before {load_before}, after {load_average()}"
            )
            for link in links:
                if transport == "socket":
                    loop.remove_reader(link.sock.fileno())
                link.stop()
            loop.run_until_complete(asyncio.sleep(0.5))
        finally:
            loop.close()
            for broker in brokers:
                broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tls", choices=["1.2", "1.3"], default="1.3")
    parser.add_argument(
        "--transports", nargs="+", choices=["fleet", "socket"], default=["socket", "fleet"]
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if len(args.transports) > 1:  # each in a process of its own: RSS from a fresh heap
        for transport in args.transports:
            subprocess.run(
                [sys.executable, "-m", "benchmarks.mqtt_transports", "--transports", transport,
                 "--riders", str(args.riders), "--seconds", str(args.seconds), "--tls", args.tls],
                check=False,
            )  # fmt: skip
        return
    with tempfile.TemporaryDirectory(prefix="alleycat-bench-") as scratch:
        run(args.transports[0], args, Path(scratch))


if __name__ == "__main__":
    main()
