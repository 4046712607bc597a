"""``alleycat ride``: the rider agent's command line.

Every option can also be set in the config file (``--config``, ``ALLEYCAT_CONFIG`` or
``/etc/alleycat/rider.toml``) under its name with underscores, or as ``ALLEYCAT_<NAME>`` in the
environment; flags win over the environment, which wins over the file. Errors a user can fix are
one line: exit 2 for bad configuration, exit 1 for everything else (certificate, sensor, spool,
a broker refusing the device).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from alleycat_rider.bounds import whole
from alleycat_rider.config import (
    BOUNDS,
    DEFAULT_TOPIC,
    LOG_FORMATS,
    LOG_LEVELS,
    RiderConfig,
    load_config,
    parse_points,
    parse_range,
)
from alleycat_rider.errors import AlleycatError, ConfigError
from alleycat_rider.options import default_in_help
from alleycat_rider.sensors.base import SENSOR_KINDS

if TYPE_CHECKING:
    from alleycat_rider.agent.display import Reporter
    from alleycat_rider.agent.loop import Agent
    from alleycat_rider.sensors.base import SensorOptions

_FILE = click.Path(dir_okay=False, path_type=Path)

#: The exit status after a ride stopped by Ctrl-C: 128 + SIGINT, as shells expect (SIGTERM,
#: systemd's stop, exits 0).
INTERRUPTED = 128 + signal.SIGINT


class BadConfiguration(click.ClickException):
    """Configuration that cannot be used: one line, exit 2."""

    exit_code = 2


def _parsed_by(
    parse: Callable[[object], Any],
) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A callback reading a flag with the config file's own parser, so both take the same text."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc

    return callback


EXAMPLES = """
\b
Examples:
  # Here, the mock sensor (the default), with `alleycat broker` running
  alleycat ride --endpoint 127.0.0.1 --ca certs/dev/ca.crt \\
    --cert certs/dev/devices/bike-1.crt --key certs/dev/devices/bike-1.key \\
    --client-id bike-1 --racer-id 100
\b
  # A bike enrolled by `alleycat provision`: its settings in rider.toml
  alleycat ride --config /etc/alleycat/rider.toml --log-format json
\b
  # A Bluetooth LE bike, its certificate for AWS IoT Core in rider.toml
  alleycat ride --config rider.toml --sensor ble --ble-name "Zwift Hub"
\b
  # Keiser bike 7 of a studio, its cadence read 5% low corrected
  alleycat ride --config rider-7.toml --sensor keiser --keiser-id 7 \\
    --cadence-scale 1.05
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("--config", "config_path", type=_FILE, help="Read settings from this TOML file.")
@click.option("--endpoint", help="Connect to this MQTT broker (the AWS IoT data endpoint).")
@click.option(
    "--port",
    type=BOUNDS["port"].click_type(),
    help="Broker port.",
    **default_in_help("8883, or 1883 without TLS"),
)
@click.option("--cert", type=_FILE, help="Device certificate (PEM) for mutual TLS.")
@click.option("--key", type=_FILE, help="Device private key (PEM).")
@click.option(
    "--ca", type=_FILE, help="Trust this CA (PEM).", **default_in_help("the system's trust store")
)
@click.option("--client-id", help="MQTT client id.", **default_in_help("alleycat-RACER_ID"))
@click.option("--racer-id", type=whole(0), help="The rider's racer id.")
@click.option(
    "--name", help="The rider's name, up to 8 characters.", **default_in_help("R<racer id>")
)
@click.option("--class-id", type=whole(1, 6), help="Exercise class.", **default_in_help("1"))
@click.option(
    "--race-seconds",
    type=BOUNDS["race_seconds"].click_type(),
    help="Race length in seconds.",
    **default_in_help("300"),
)
@click.option("--topic", help="Publish ride messages here.", **default_in_help("alleycat-publish"))
@click.option(
    "--own-topic/--no-own-topic",
    default=None,
    help="Publish on TOPIC/CLIENT_ID, the bike's own topic (what `provision` allows).",
)
@click.option(
    "--results-topic", help="Read standings here.", **default_in_help("alleycat-subscribe")
)
@click.option(
    "--fleet-template",
    metavar="NAME",
    help="First boot without --cert: enrol by claim with this provisioning template.",
)
@click.option("--claim-cert", type=_FILE, help="The factory's claim certificate (PEM).")
@click.option("--claim-key", type=_FILE, help="The claim certificate's key (PEM).")
@click.option("--serial-number", help="The bike's serial number, its thing name once enrolled.")
@click.option(
    "--enrol-keys",
    type=click.Choice(["bike", "service"]),
    help="Who makes the key when enrolling: the bike (a CSR, the key never leaves it) or "
    "IoT Core (CreateKeysAndCertificate).",
    **default_in_help("bike"),
)
@click.option(
    "--qos",
    type=whole(0, 1),
    help="0: drop while offline; 1: spool.",
    **default_in_help("1"),
)
@click.option(
    "--spool",
    type=_FILE,
    help="SQLite spool of unacknowledged QoS 1 messages.",
    **default_in_help("$STATE_DIRECTORY/spool.sqlite3, else ~/.local/state/alleycat/spool.sqlite3"),
)
@click.option(
    "--spool-max",
    type=BOUNDS["spool_max"].click_type(),
    help="Spool at most this many messages.",
    **default_in_help("86400"),
)
@click.option(
    "--spool-reserve",
    type=BOUNDS["spool_reserve"].click_type(),
    help="Reserve disk room for this many messages when the spool opens (0: none).",
    **default_in_help("3600, an hour"),
)
@click.option(
    "--sensor",
    type=click.Choice(SENSOR_KINDS),
    help="Where readings come from.",
    **default_in_help("mock"),
)
@click.option("--device", help="Serial port of the bike (serial, peloton).")
@click.option("--baud", type=BOUNDS["baud"].click_type(), help="Serial speed.")
@click.option("--address", help="BLE address of the bike.")
@click.option("--ble-name", help="Advertised BLE name to scan for.")
@click.option(
    "--keiser-id",
    type=BOUNDS["keiser_id"].click_type(),
    help="Equipment id set on the Keiser console (keiser).",
    **default_in_help("the first Keiser bike heard"),
)
@click.option("--seed", type=int, help="Seed the mock rider.")
@click.option(
    "--mock-cadence",
    callback=_parsed_by(parse_range),
    metavar="MIN:MAX",
    help="Keep the mock rider's cadence within MIN:MAX rpm.",
    **default_in_help("30:90"),
)
@click.option(
    "--mock-resistance",
    callback=_parsed_by(parse_range),
    metavar="MIN:MAX",
    help="Keep the mock rider's resistance within MIN:MAX.",
    **default_in_help("33:86"),
)
@click.option(
    "--ftms-resistance-scale",
    type=BOUNDS["ftms_resistance_scale"].click_type(),
    help="Scale FTMS resistance (0.1 for bikes reporting ten times the level).",
    **default_in_help("1"),
)
@click.option(
    "--peloton-resistance-map",
    callback=_parsed_by(parse_points),
    metavar="RAW:LEVEL,...",
    help="Turn the Peloton's raw resistance into a level through these points.",
    **default_in_help("the raw value"),
)
@click.option(
    "--cadence-scale",
    type=BOUNDS["cadence_scale"].click_type(),
    help="Calibrate: multiply the sensor's cadence by this.",
    **default_in_help("1"),
)
@click.option(
    "--resistance-scale",
    type=BOUNDS["resistance_scale"].click_type(),
    help="Calibrate: multiply the sensor's resistance by this, then add the offset.",
    **default_in_help("1"),
)
@click.option(
    "--resistance-offset",
    type=BOUNDS["resistance_offset"].click_type(),
    help="Calibrate: add this to the sensor's resistance, after the scale.",
    **default_in_help("0"),
)
@click.option(
    "--insecure/--no-insecure",
    default=None,
    help="Allow plain TCP to a broker that is not on this machine.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="Panel or JSON lines.",
    **default_in_help("auto: a panel on a terminal, else JSON"),
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    help="Report from this level.",
    **default_in_help("info"),
)
@click.option(
    "--drain-timeout",
    type=BOUNDS["drain_timeout"].click_type(),
    help="Seconds to wait for PUBACKs at exit.",
    **default_in_help("5"),
)
@click.option(
    "--status-interval",
    type=BOUNDS["status_interval"].click_type(),
    help="Seconds between status lines.",
    **default_in_help("60"),
)
def ride(config_path: Path | None, **flags: Any) -> None:
    """Read the bike once a second and publish the Alleycat ride message over MQTT.

    Settings come from flags, then ALLEYCAT_<NAME> environment variables, then the config file
    (--config, ALLEYCAT_CONFIG, or /etc/alleycat/rider.toml). Stop with Ctrl-C or SIGTERM: the
    race's final message is sent first.
    """
    try:
        config = load_config(flags, os.environ, config_path)
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc
    # Imported here so that `alleycat ride --help` stays quick.
    from alleycat_rider.agent.display import make_reporter

    reporter = make_reporter(
        config.log_format, level=config.log_level, status_interval=config.status_interval
    )
    # An error is said once, on stderr, by click: not also in the log on stdout.
    try:
        agent = run_agent(config, reporter)
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc
    except AlleycatError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        reporter.close()
    if agent.stop_signal == signal.SIGINT:
        raise click.exceptions.Exit(INTERRUPTED)


def sensor_options(config: RiderConfig) -> SensorOptions:
    """The sensor options a configuration asks for."""
    from alleycat_rider.core.physiology import RideBounds
    from alleycat_rider.sensors.base import SensorOptions

    return SensorOptions(
        kind=config.sensor,
        device=config.device,
        baud=config.baud,
        address=config.address,
        ble_name=config.ble_name,
        seed=config.seed,
        ftms_resistance_scale=config.ftms_resistance_scale,
        peloton_resistance_map=config.peloton_resistance_map,
        keiser_id=config.keiser_id,
        cadence_scale=config.cadence_scale,
        resistance_scale=config.resistance_scale,
        resistance_offset=config.resistance_offset,
        bounds=RideBounds(
            cadence_min=config.mock_cadence[0],
            cadence_max=config.mock_cadence[1],
            resistance_min=config.mock_resistance[0],
            resistance_max=config.mock_resistance[1],
        ),
    )


def run_agent(config: RiderConfig, reporter: Reporter) -> Agent:
    """Run the agent with real adapters until it is asked to stop; return it for its counters.

    Raises:
        AlleycatError: a problem the user can fix (certificate, sensor, spool, broker refusal).
    """
    from alleycat_rider.agent.loop import Agent
    from alleycat_rider.agent.racestate import RaceState, race_state_path
    from alleycat_rider.agent.spool import Spool
    from alleycat_rider.mqtt import MqttLink, check_credentials
    from alleycat_rider.sensors.choose import open_sensor

    if config.fleet_template is not None and config.cert is None:
        config = enrolled(config, reporter)
    settings = config.mqtt_settings
    check_credentials(settings)
    sensor = open_sensor(sensor_options(config))
    spool = None
    if config.qos == 1:
        # The spool reports a damaged log it found and the disk refusing writes, and riding on.
        spool = Spool(
            config.spool,
            max_messages=config.spool_max,
            reserve=config.spool_reserve,
            report=reporter.event,
        )
    try:
        agent = Agent(
            config,
            sensor=sensor,
            link_factory=lambda sink: MqttLink(settings, sink),
            spool=spool,
            reporter=reporter,
            race_state=RaceState(race_state_path(config.spool), report=reporter.event),
        )
        agent.run()
        return agent
    finally:
        if spool is not None:
            spool.close()


def enrolled(config: RiderConfig, reporter: Reporter) -> RiderConfig:
    """``config`` with the bike's own identity: the one stored in its state directory, or one
    made now by enrolling with the claim certificate and the template.

    Raises:
        EnrolmentError: The claim certificate or the template refused the bike.
    """
    from dataclasses import replace

    from alleycat_rider.agent.enrol import Claim, enrol, stored_identity

    assert config.fleet_template is not None and config.serial_number is not None
    state = config.spool.parent
    identity = stored_identity(state)
    if identity is None:
        reporter.event(
            "info", "enrolling", template=config.fleet_template, serial_number=config.serial_number
        )
        claim = Claim(
            settings=config.claim_settings,
            template=config.fleet_template,
            parameters={"SerialNumber": config.serial_number, "RacerId": str(config.racer_id)},
            keys=config.enrol_keys,
        )
        identity = enrol(claim, state, report=reporter.event)
        reporter.event("info", "enrolled", thing_name=identity.thing_name)
    device = identity.device_configuration
    topic = device.get("topic", DEFAULT_TOPIC)
    if device.get("ownTopic") == "true":
        topic = f"{topic}/{identity.thing_name}"
    return replace(
        config,
        cert=identity.cert,
        key=identity.key,
        client_id=identity.thing_name,
        topic=topic,
        results_topic=device.get("resultsTopic", config.results_topic),
    )
