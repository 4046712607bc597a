"""The rider agent's configuration: a TOML file, ``ALLEYCAT_*`` variables and flags, flags winning.

Every setting has one name, the long option with underscores (``--results-topic`` is
``results_topic`` in the file and ``ALLEYCAT_RESULTS_TOPIC`` in the environment). Sources are
layered: built-in defaults, then the config file, then the environment, then flags. The file is
``--config``, else ``ALLEYCAT_CONFIG``, else :data:`DEFAULT_CONFIG_PATH` if it exists. A relative
path in the file (``cert``, ``key``, ``ca``, ``spool``) is relative to the file's own directory, so
a directory holding ``rider.toml`` and its certificate can be moved as a whole; relative paths in
flags and the environment are relative to the working directory, as on any command line.

Loading is pure: the environment and the flags are arguments, and the only I/O is reading the file.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from alleycat_rider.agent.spool import DEFAULT_SPOOL_MAX, DEFAULT_SPOOL_RESERVE
from alleycat_rider.bounds import Bounds
from alleycat_rider.core.message import DEFAULT_RACE_SECONDS, MessageError, RiderIdentity
from alleycat_rider.core.physiology import DEFAULT_BOUNDS
from alleycat_rider.errors import ConfigError
from alleycat_rider.mqtt import MqttSettings
from alleycat_rider.sensors.base import SENSOR_KINDS

#: The system-wide config file, read when it exists and no other file is named.
DEFAULT_CONFIG_PATH = Path("/etc/alleycat/rider.toml")
#: Prefix of the environment variables that configure the agent.
ENV_PREFIX = "ALLEYCAT_"
#: The port AWS IoT Core takes MQTT over mutual TLS on.
TLS_PORT = 8883
#: The usual port of plain-TCP MQTT (loopback or ``--insecure`` only).
PLAIN_PORT = 1883
#: The shared ride topic; a bike's own topic is ``<topic>/<client id>``.
DEFAULT_TOPIC = "alleycat-publish"
#: How the agent reports: ``auto`` is a panel on a terminal and JSON lines otherwise.
LOG_FORMATS = ("auto", "json", "panel")
#: How much the agent reports.
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class RiderConfig:
    """Everything ``alleycat ride`` needs, validated."""

    endpoint: str
    """MQTT broker host name: the AWS IoT Core data endpoint, or a local broker."""
    port: int
    """Broker port: 8883 with TLS, 1883 for plain TCP unless given."""
    cert: Path | None = None
    """Device certificate (PEM); ``None`` only for plain TCP."""
    key: Path | None = None
    """Device private key (PEM); ``None`` only for plain TCP."""
    ca: Path | None = None
    """CA bundle to trust; ``None`` for the system trust store."""
    client_id: str
    """MQTT client id (on IoT Core usually the thing name)."""
    racer_id: int
    name: str
    class_id: int = 1
    race_seconds: int = DEFAULT_RACE_SECONDS
    """Length of one race; races follow one another."""
    topic: str = DEFAULT_TOPIC
    """The topic ride messages are published on (with ``own_topic``, ``<topic>/<client id>``)."""
    results_topic: str = "alleycat-subscribe"
    fleet_template: str | None = None
    """Enrol by claim with this provisioning template when there is no certificate yet."""
    claim_cert: Path | None = None
    """The factory's claim certificate (PEM), for the first boot."""
    claim_key: Path | None = None
    serial_number: str | None = None
    """The bike's serial number: its thing name once enrolled."""
    enrol_keys: str = "bike"
    """Who makes the key when enrolling: ``bike`` (a CSR; the key never leaves) or ``service``."""
    qos: int = 1
    """0: fire and forget, dropped while offline; 1: spooled on disk until acknowledged."""
    spool: Path
    """The SQLite spool of QoS 1 messages."""
    spool_max: int = DEFAULT_SPOOL_MAX
    """The most messages the spool holds; the oldest are dropped beyond."""
    spool_reserve: int = DEFAULT_SPOOL_RESERVE
    """Room for this many messages is reserved on disk when the spool opens (0: none)."""
    sensor: str = "mock"
    device: str | None = None
    baud: int | None = None
    address: str | None = None
    ble_name: str | None = None
    seed: int | None = None
    ftms_resistance_scale: float = 1.0
    """Multiplies FTMS resistance: 0.1 for bikes that report ten times the level."""
    peloton_resistance_map: tuple[tuple[float, float], ...] = ()
    """(raw, level) points, raw increasing, that turn the Peloton's raw resistance into a level;
    empty sends the raw value."""
    keiser_id: int | None = None
    """The equipment id set on the Keiser console to listen to."""
    cadence_scale: float = 1.0
    """Calibration: multiplies the sensor's cadence."""
    resistance_scale: float = 1.0
    """Calibration: multiplies the sensor's resistance (before the offset)."""
    resistance_offset: float = 0.0
    """Calibration: added to the sensor's resistance (after the scale)."""
    mock_cadence: tuple[float, float] = (DEFAULT_BOUNDS.cadence_min, DEFAULT_BOUNDS.cadence_max)
    """(min, max) rpm the mock rider pedals within."""
    mock_resistance: tuple[float, float] = (
        DEFAULT_BOUNDS.resistance_min,
        DEFAULT_BOUNDS.resistance_max,
    )
    """(min, max) resistance the mock rider sets the knob within."""
    insecure: bool = False
    """Allow plain TCP to a broker that is not on this machine."""
    log_format: str = "auto"
    log_level: str = "info"
    drain_timeout: float = 5.0
    """Seconds to wait for outstanding PUBACKs when stopping."""
    status_interval: float = 60.0
    """Seconds between status log lines (JSON logs only)."""

    @property
    def tls(self) -> bool:
        """Whether the connection uses mutual TLS (else plain TCP)."""
        return self.cert is not None

    @property
    def identity(self) -> RiderIdentity:
        """The rider as the message sees it."""
        return RiderIdentity(racer_id=self.racer_id, name=self.name, class_id=self.class_id)

    @property
    def mqtt_settings(self) -> MqttSettings:
        """The connection the bike rides on: its own certificate and client id."""
        return MqttSettings(
            endpoint=self.endpoint,
            port=self.port,
            client_id=self.client_id,
            cert=self.cert,
            key=self.key,
            ca=self.ca,
        )

    @property
    def claim_settings(self) -> MqttSettings:
        """The connection enrolment makes: the claim certificate, the serial number as client id."""
        assert self.serial_number is not None
        return replace(
            self.mqtt_settings,
            client_id=self.serial_number,
            cert=self.claim_cert,
            key=self.claim_key,
        )


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _number(value: object) -> float:
    """A finite number, from TOML or from text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _pair(value: object) -> tuple[float, float]:
    """Two numbers: ``"A:B"``, or a two-item array."""
    parts = value.split(":") if isinstance(value, str) else value
    if not isinstance(parts, list | tuple) or len(parts) != 2:
        raise ValueError(f"not a pair: {value!r}")
    return _number(parts[0]), _number(parts[1])


def parse_range(value: object) -> tuple[float, float]:
    """A ``MIN:MAX`` range with 0 <= MIN < MAX: text, or a TOML array ``[MIN, MAX]``.

    Raises:
        ValueError: the value is not two numbers, or they are out of order.
    """
    try:
        low, high = _pair(value)
    except ValueError:
        raise ValueError(f"expected MIN:MAX, not {value!r}") from None
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= MIN < MAX, not {value!r}")
    return low, high


def parse_points(value: object) -> tuple[tuple[float, float], ...]:
    """Calibration points ``RAW:LEVEL,RAW:LEVEL,...``: text, or a TOML array of pairs.

    Raises:
        ValueError: the value is not a list of number pairs, has fewer than two, or its raw
            values do not increase from point to point.
    """
    items = value.split(",") if isinstance(value, str) else value
    try:
        if not isinstance(items, list | tuple):
            raise ValueError(f"not a list: {value!r}")
        points = tuple(_pair(item) for item in items)
    except ValueError:
        raise ValueError(f"expected RAW:LEVEL,RAW:LEVEL,..., not {value!r}") from None
    if len(points) < 2:
        raise ValueError(f"need at least two RAW:LEVEL points, not {value!r}")
    if any(earlier[0] >= later[0] for earlier, later in pairwise(points)):
        raise ValueError(f"RAW must increase from point to point, not {value!r}")
    return points


#: Each setting's type: how to read it from the environment, and what TOML must hold.
_KINDS: dict[str, tuple[Callable[[Any], Any], tuple[type, ...]]] = {
    "str": (str, (str,)),
    "int": (int, (int,)),
    "float": (float, (int, float)),
    "bool": (_parse_bool, (bool,)),
    "path": (Path, (str,)),
    "range": (parse_range, (str, list)),
    "point list": (parse_points, (str, list)),
}
#: Each kind as a message names it: "racer_id must be a whole number", never "a int".
_KIND_NOUNS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "path": "a path",
    "range": "a range",
    "point list": "a point list",
}
#: Kinds whose values in the file go through their parser (the others are taken as they are).
_PARSED_IN_FILE = ("float", "range", "point list")
#: Every setting the agent reads, by its name in the file (``ALLEYCAT_`` + upper case in the
#: environment), and its type.
SETTINGS: dict[str, str] = {
    "endpoint": "str",
    "port": "int",
    "cert": "path",
    "key": "path",
    "ca": "path",
    "client_id": "str",
    "racer_id": "int",
    "name": "str",
    "class_id": "int",
    "race_seconds": "int",
    "topic": "str",
    "own_topic": "bool",
    "fleet_template": "str",
    "claim_cert": "path",
    "claim_key": "path",
    "serial_number": "str",
    "enrol_keys": "str",
    "results_topic": "str",
    "qos": "int",
    "spool": "path",
    "spool_max": "int",
    "spool_reserve": "int",
    "sensor": "str",
    "device": "str",
    "baud": "int",
    "address": "str",
    "ble_name": "str",
    "seed": "int",
    "ftms_resistance_scale": "float",
    "peloton_resistance_map": "point list",
    "keiser_id": "int",
    "cadence_scale": "float",
    "resistance_scale": "float",
    "resistance_offset": "float",
    "mock_cadence": "range",
    "mock_resistance": "range",
    "insecure": "bool",
    "log_format": "str",
    "log_level": "str",
    "drain_timeout": "float",
    "status_interval": "float",
}


#: The numeric settings' bounds, applied to a value from the file, the environment or a flag
#: alike (and the flags' click types are made from them). Racer and class ids are checked by
#: :class:`~alleycat_rider.core.message.RiderIdentity`, the QoS as one of its two values.
BOUNDS: dict[str, Bounds] = {
    "port": Bounds(minimum=1, maximum=65535, integer=True),
    "race_seconds": Bounds(minimum=1, integer=True),
    "spool_max": Bounds(minimum=1, integer=True),
    "spool_reserve": Bounds(minimum=0, integer=True),
    "baud": Bounds(minimum=1, integer=True),
    "ftms_resistance_scale": Bounds(minimum=0, min_open=True),
    "keiser_id": Bounds(minimum=0, maximum=255, integer=True),
    "cadence_scale": Bounds(minimum=0, maximum=10, min_open=True),
    "resistance_scale": Bounds(minimum=0, maximum=100, min_open=True),
    "resistance_offset": Bounds(minimum=-100, maximum=100),
    "drain_timeout": Bounds(minimum=0),
    "status_interval": Bounds(minimum=0),
}


#: Where the port is set, for each place the endpoint can come from (see :func:`_bounded`).
_PORT_SETTING = {"--endpoint": "--port", ENV_PREFIX + "ENDPOINT": ENV_PREFIX + "PORT"}


def _bounded(key: str, value: Any, source: str) -> Any:
    """``value`` checked against ``key``'s bounds (if it has any; the endpoint must be a host
    name), else ConfigError naming ``source``, where the value came from."""
    if key == "endpoint" and isinstance(value, str):
        try:
            return check_mqtt_host(value, port_option=_PORT_SETTING.get(source, "port ="))
        except ValueError as exc:
            raise ConfigError(f"{source} {exc}") from None
    bounds = BOUNDS.get(key)
    if bounds is None:
        return value
    try:
        return bounds.check(value)
    except ValueError as exc:
        raise ConfigError(f"{source} {exc}") from None


def default_spool_path(env: Mapping[str, str]) -> Path:
    """Where the spool lives unless configured: systemd's state directory, else XDG state."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "spool.sqlite3"
    state_home = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")) / ".local/state")
    return Path(state_home).expanduser() / "alleycat" / "spool.sqlite3"


def config_file_path(flag: Path | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: the flag, ``ALLEYCAT_CONFIG``, or the default if it exists."""
    if flag is not None:
        return flag
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML config file, checked for unknown keys and types.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or holds a bad setting.
    """
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    settings: dict[str, Any] = {}
    for key, value in data.items():
        kind = SETTINGS.get(key, "")
        if not kind:
            known = ", ".join(sorted(SETTINGS))
            raise ConfigError(f"unknown setting {key!r} in {path}; known settings: {known}")
        parse, allowed = _KINDS[kind]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"{key} in {path} must be {_KIND_NOUNS[kind]}, not {value!r}")
        if key in BOUNDS or key == "endpoint":
            settings[key] = _bounded(key, value, f"{key} in {path}")
        elif kind == "path":
            # Relative to the file, so the file still works when run from anywhere.
            settings[key] = path.parent / str(value)
        elif kind in _PARSED_IN_FILE:
            try:
                settings[key] = parse(value)
            except ValueError as exc:
                raise ConfigError(f"{key} in {path} must be {_KIND_NOUNS[kind]}: {exc}") from exc
        else:
            settings[key] = value
    return settings


def read_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as ``ALLEYCAT_*`` environment variables.

    Raises:
        ConfigError: a variable's value is not of its setting's type.
    """
    settings: dict[str, Any] = {}
    for key, kind in SETTINGS.items():
        variable = ENV_PREFIX + key.upper()
        if variable not in env:
            continue
        if key in BOUNDS or key == "endpoint":
            settings[key] = _bounded(key, env[variable], variable)
            continue
        parse = _KINDS[kind][0]
        try:
            settings[key] = parse(env[variable])
        except ValueError as exc:
            noun = _KIND_NOUNS[kind]
            if kind in ("range", "point list"):  # their parsers say what is wrong
                raise ConfigError(f"{variable} must be {noun}: {exc}") from exc
            raise ConfigError(f"{variable} must be {noun}, not {env[variable]!r}") from exc
    return settings


def load_config(
    flags: Mapping[str, Any], env: Mapping[str, str], config_path: Path | None = None
) -> RiderConfig:
    """Merge defaults, the config file, the environment and flags (in rising priority).

    Args:
        flags: Settings given on the command line; ``None`` values are ignored.
        env: The environment.
        config_path: The ``--config`` flag, if given.

    Raises:
        ConfigError: a setting is missing, malformed or inconsistent with another.
    """
    merged: dict[str, Any] = {}
    path = config_file_path(config_path, env)
    if path is not None:
        merged.update(read_config_file(path))
    merged.update(read_environment(env))
    unknown = set(flags) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    merged.update(
        {
            key: _bounded(key, value, "--endpoint" if key == "endpoint" else key)
            for key, value in flags.items()
            if value is not None
        }
    )
    return _validate(merged, env)


def check_endpoint_url(value: str) -> str:
    """``value`` if it is an http(s) URL with a host (an AWS endpoint override), else ValueError
    saying how to write it."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        try:
            parts.port  # noqa: B018 - a port that is not a number raises here
        except ValueError:
            raise ValueError(f"{value!r} has a port that is not a number") from None
        return value
    hint = value if "://" not in value else value.split("://", 1)[1]
    raise ValueError(f"{value!r} is not a URL: write it with its scheme, e.g. http://{hint}")


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def check_mqtt_host(value: str, *, port_option: str = "--port") -> str:
    """``value`` if it can be an MQTT broker's host name or IP address, else ValueError saying
    how to write it: a port goes in ``port_option``, and a URL is not a host name.

    Every MQTT command checks its endpoint here (``ride``'s flag, file and environment alike,
    and the simulator's ``--mqtt-endpoint``): awscrt would retry an unresolvable name forever.
    """
    from urllib.parse import urlsplit

    text = value.strip()
    if "://" in text:
        parts = urlsplit(text)
        host = parts.hostname or "HOST"
        try:
            port = f" {parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        raise ValueError(
            f"{value!r} is a URL, not a host name: give the host alone ({host}) and the port "
            f"with {port_option}{port}"
        )
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    host, colon, port = text.rpartition(":")
    if colon and port.isdigit() and host and ":" not in host:
        raise ValueError(
            f"{value!r} is a host and a port: give the host alone ({host}) and the port with "
            f"{port_option} {port}"
        )
    labels = text.removesuffix(".").split(".")
    if len(text) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is not a host name or an IP address")
    return text


def endpoint_url_param(ctx: Any, param: Any, value: str | None) -> str | None:
    """:func:`check_endpoint_url` as a click callback for ``--endpoint-url``: a usage error,
    naming the environment variable (``AWS_ENDPOINT_URL``) when the value came from it."""
    import click
    from click.core import ParameterSource

    if value is None:
        return None
    try:
        return check_endpoint_url(value)
    except ValueError as exc:
        if ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint=param.envvar) from None
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require(settings: Mapping[str, Any], key: str) -> Any:
    if settings.get(key) is None:
        option = "--" + key.replace("_", "-")
        raise ConfigError(
            f"missing {key}: pass {option}, set {ENV_PREFIX}{key.upper()}, "
            f"or put {key} in the config file"
        )
    return settings[key]


def _one_of(settings: Mapping[str, Any], key: str, choices: tuple[Any, ...]) -> None:
    if key in settings and settings[key] not in choices:
        allowed = ", ".join(str(choice) for choice in choices)
        raise ConfigError(f"{key} must be one of {allowed}, not {settings[key]!r}")


def _validate(settings: dict[str, Any], env: Mapping[str, str]) -> RiderConfig:
    endpoint = str(_require(settings, "endpoint"))
    racer_id = int(_require(settings, "racer_id"))
    _one_of(settings, "qos", (0, 1))
    _one_of(settings, "enrol_keys", ("bike", "service"))
    _one_of(settings, "log_format", LOG_FORMATS)
    _one_of(settings, "log_level", LOG_LEVELS)
    _one_of(settings, "sensor", SENSOR_KINDS)
    for key, kind in SETTINGS.items():
        if kind in ("range", "point list") and settings.get(key) is not None:
            try:
                settings[key] = _KINDS[kind][0](settings[key])
            except ValueError as exc:
                raise ConfigError(f"{key} must be {_KIND_NOUNS[kind]}: {exc}") from exc
    cert = settings.get("cert")
    if (cert is None) != (settings.get("key") is None):
        raise ConfigError("mutual TLS needs both a certificate (--cert) and a key (--key)")
    enrolling = settings.get("fleet_template") is not None and cert is None
    if enrolling:
        for key, flag in (
            ("claim_cert", "--claim-cert"),
            ("claim_key", "--claim-key"),
            ("serial_number", "--serial-number"),
        ):
            if settings.get(key) is None:
                raise ConfigError(f"enrolling with --fleet-template needs {flag}")
        settings.setdefault("client_id", settings["serial_number"])
    elif cert is None:
        if settings.get("ca") is not None:
            raise ConfigError("--ca needs a device certificate and key (--cert, --key)")
        if not (is_loopback(endpoint) or settings.get("insecure")):
            raise ConfigError(
                f"no device certificate for {endpoint}: pass --cert and --key "
                "(plain TCP is only for a broker on this machine, or with --insecure)"
            )
    settings.setdefault("port", TLS_PORT if cert is not None or enrolling else PLAIN_PORT)
    settings.setdefault("name", f"R{racer_id}"[:8])
    settings.setdefault("client_id", f"alleycat-{racer_id}")
    if settings.pop("own_topic", False):
        # The bike's own topic, the only one a per-bike policy lets it publish on, and the one
        # the rule takes the sender from.
        settings["topic"] = f"{settings.get('topic', DEFAULT_TOPIC)}/{settings['client_id']}"
    settings.setdefault("spool", default_spool_path(env))
    names = {field.name for field in fields(RiderConfig)}
    config = RiderConfig(**{key: value for key, value in settings.items() if key in names})
    try:
        config.identity  # noqa: B018 (validates name, class id and racer id)
    except MessageError as exc:
        raise ConfigError(str(exc)) from exc
    return config
