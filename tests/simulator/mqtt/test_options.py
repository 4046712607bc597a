"""``simulate --via mqtt``'s broker list and source addresses, read from the command line."""

from __future__ import annotations

import click
import pytest

from simulator.mqtt.options import fleet_brokers, source_addresses


def brokers(endpoint: str, *, port: int = 8883, plain: bool = False) -> list[tuple[str, int]]:
    return fleet_brokers({"mqtt_endpoint": endpoint, "mqtt_port": port, "plain": plain})


def test_one_broker_or_several_each_with_its_port_or_mqtt_port() -> None:
    assert brokers("127.0.0.1") == [("127.0.0.1", 8883)]
    assert brokers("127.0.0.1", port=1884) == [("127.0.0.1", 1884)]
    assert brokers("127.0.0.1:1884, localhost,abc-ats.iot.us-east-1.amazonaws.com:443") == [
        ("127.0.0.1", 1884),
        ("localhost", 8883),
        ("abc-ats.iot.us-east-1.amazonaws.com", 443),
    ]


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("127.0.0.1:0", "the port must be 1 to 65535"),
        ("127.0.0.1:http", "the port must be 1 to 65535"),
        ("127.0.0.1,", "give HOST or HOST:PORT"),
        (":8883", "give HOST or HOST:PORT"),
        ("mqtts://broker:8883", "is a URL, not a host name"),
        ("127.0.0.1:1883,http://broker", "is a URL, not a host name"),
    ],
)
def test_a_bad_broker_is_a_usage_error_that_says_what_to_give(endpoint: str, says: str) -> None:
    with pytest.raises(click.UsageError, match=says):
        brokers(endpoint)


def test_plain_tcp_only_to_loopback_brokers() -> None:
    assert brokers("127.0.0.1:1883,127.0.0.2:1883", plain=True)[1] == ("127.0.0.2", 1883)
    with pytest.raises(click.UsageError, match="only to 127.0.0.1, not example.com"):
        brokers("127.0.0.1:1883,example.com:1883", plain=True)


def test_source_addresses_as_a_list_or_a_range_of_the_last_number() -> None:
    assert source_addresses(None) == ()
    assert source_addresses("127.0.0.2,127.0.0.9") == ("127.0.0.2", "127.0.0.9")
    assert source_addresses("127.0.0.2-4, 10.0.0.7") == (
        "127.0.0.2", "127.0.0.3", "127.0.0.4", "10.0.0.7",
    )  # fmt: skip


@pytest.mark.parametrize("text", ["127.0.0", "127.0.0.5-3", "127.0.0.2-300", "host-1"])
def test_bad_source_addresses_are_a_usage_error(text: str) -> None:
    with pytest.raises(click.UsageError, match="give IPv4 addresses"):
        source_addresses(text)
