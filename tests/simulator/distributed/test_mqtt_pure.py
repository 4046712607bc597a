"""``alleycat locust --via mqtt``'s pure parts: the riders users bring, and the summed summary."""

from __future__ import annotations

from typing import Any

from simulator.distributed.mqtt_worker import MqttRiderGroups
from simulator.distributed.riders import GroupSettings
from simulator.distributed.summary import mqtt_run_summary
from simulator.engine.batching import Record


def test_groups_name_the_fleets_riders_across_users() -> None:
    groups = MqttRiderGroups(GroupSettings(riders_per_user=3, seed=1), 0, ())
    assert [groups.join(1000.0) for _ in range(3)] == [0, 1, 2]
    groups.leave(1)
    out: list[Record] = []
    groups.emit_until(1003.5, out, 10_000)
    riders = {record.rider for record in out}
    assert riders == {0, 1, 2, 6, 7, 8}  # user 1's riders (3..5) left
    assert groups.joined == 3


def report(index: int, *, final: bool, acked: int, held: int, latency: list[Any]) -> dict[str, Any]:
    return {
        "worker_index": index, "final": final, "pending": held, "riders": 10,
        "latency": latency, "connect_latency": [[50, 10]], "error": None,
        "summary": {
            "via": "mqtt", "qos": 1, "riders": 10, "generated": acked + held, "published": acked,
            "acked": acked, "sent_unacknowledged": 0, "resent": 0, "failed": 0, "rejected": 0,
            "dropped": 0, "connects": 10, "connect_failures": 1, "reconnects": 0,
            "disconnects": 0, "in_flight": 0, "held": held, "open_connections": 0,
            "riders_refused": 0, "brokers": [f"127.0.0.1:{1883 + index}"], "tls_contexts": 1,
            "connect_failure_reasons": ["cannot connect to 127.0.0.1:1883: connection refused"],
            "puback_latency_ms": {"p50": 0, "p95": 0, "p99": 0},
            "connect_ms": {"p50": 0, "p99": 0},
        },
    }  # fmt: skip


def test_the_summary_sums_workers_with_simulates_keys_and_counts_a_lost_worker() -> None:
    summary = mqtt_run_summary(
        [
            report(1, final=False, acked=100, held=7, latency=[[20, 100]]),
            report(0, final=True, acked=300, held=0, latency=[[2, 300]]),
        ],
        wall_seconds=12.5,
    )
    assert summary["generated"] == 407 == summary["acked"] + summary["held"]
    assert summary["acked"] == 400 and summary["connects"] == 20 and summary["riders"] == 20
    assert summary["lost"] == 7  # worker 1 never finished: what it held is lost
    assert summary["qos"] == 1 and summary["tls_contexts"] == 1
    assert summary["brokers"] == ["127.0.0.1:1883", "127.0.0.1:1884"]
    assert summary["connect_failure_reasons"] == [
        "cannot connect to 127.0.0.1:1883: connection refused"
    ]
    assert summary["puback_latency_ms"]["p50"] == 2 and summary["puback_latency_ms"]["p99"] == 20
    assert summary["connect_ms"]["p50"] == 50
    assert summary["per_connection_limit"] == 100 and summary["elapsed_s"] == 12.5
    assert [(w["worker_index"], w["finished"], w["lost"]) for w in summary["workers"]] == [
        (0, True, 0), (1, False, 7),
    ]  # fmt: skip
