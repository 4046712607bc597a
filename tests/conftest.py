"""Shared fixtures. The real servers (mosquitto, kinesalite) live in ``tests/servers``."""

pytest_plugins = [
    "tests.servers.mosquitto",
    "tests.servers.kinesis",
    "tests.servers.moto",
]
