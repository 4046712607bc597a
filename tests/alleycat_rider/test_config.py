"""Configuration layering: file, then ALLEYCAT_* variables, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from alleycat_rider.config import default_spool_path, is_loopback, load_config
from alleycat_rider.errors import ConfigError

TLS = {"cert": Path("/c.pem"), "key": Path("/k.pem")}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rider.toml"
    path.write_text(text)
    return path


def test_flags_win_over_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'endpoint = "iot.example.com"\nracer_id = 7\nname = "File"\ntopic = "from-file"\n'
        'cert = "/c.pem"\nkey = "/k.pem"\nqos = 0\n',
    )
    env = {"ALLEYCAT_NAME": "Env", "ALLEYCAT_TOPIC": "from-env", "HOME": "/home/r"}
    config = load_config({"name": "Flag", "qos": None}, env, path)
    assert config.name == "Flag"
    assert config.topic == "from-env"
    assert config.qos == 0
    assert config.racer_id == 7
    assert config.port == 8883
    assert config.tls


def test_the_config_file_can_be_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'endpoint = "localhost"\nracer_id = 3\nclass_id = 4\n')
    config = load_config({}, {"ALLEYCAT_CONFIG": str(path), "HOME": "/h"})
    assert config.class_id == 4
    assert config.client_id == "alleycat-3"
    assert config.name == "R3"


def test_environment_values_are_typed() -> None:
    env = {
        "ALLEYCAT_ENDPOINT": "127.0.0.1",
        "ALLEYCAT_RACER_ID": "12",
        "ALLEYCAT_INSECURE": "yes",
        "ALLEYCAT_DRAIN_TIMEOUT": "2.5",
        "ALLEYCAT_SPOOL": "/var/lib/alleycat/s.db",
    }
    config = load_config({}, env)
    assert config.racer_id == 12
    assert config.insecure is True
    assert config.drain_timeout == 2.5
    assert config.spool == Path("/var/lib/alleycat/s.db")
    assert config.port == 1883
    assert not config.tls


def test_a_malformed_environment_variable_names_itself() -> None:
    with pytest.raises(
        ConfigError, match="^ALLEYCAT_RACER_ID must be a whole number, not 'seven'$"
    ):
        load_config({"endpoint": "localhost"}, {"ALLEYCAT_RACER_ID": "seven"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("racer_id = 1\nbogus = 2\n", "unknown setting 'bogus'"),
        ('racer_id = "one"\n', "racer_id in .* must be a whole number, not 'one'"),
        ("racer_id = 1\ninsecure = 1\n", "insecure .* must be true or false, not 1"),
        ("racer_id = = 1\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, 'endpoint = "localhost"\n' + text)
    with pytest.raises(ConfigError, match=message):
        load_config({}, {}, path)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config({}, {}, tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"racer_id": 1}, "missing endpoint: pass --endpoint, set ALLEYCAT_ENDPOINT"),
        ({"endpoint": "localhost"}, "missing racer_id"),
        ({"endpoint": "iot.example.com", "racer_id": 1}, "pass --cert and --key"),
        ({"endpoint": "iot.example.com", "racer_id": 1, "cert": Path("/c")}, "both"),
        ({"endpoint": "localhost", "racer_id": 1, "ca": Path("/ca")}, "--ca needs"),
        ({"endpoint": "localhost", "racer_id": 1, "qos": 2}, "qos must be one of 0, 1"),
        ({"endpoint": "localhost", "racer_id": 1, "name": "Much too long"}, "name must be"),
        ({"endpoint": "localhost", "racer_id": 1, "class_id": 9}, "class id"),
        ({"endpoint": "localhost", "racer_id": 1, "spool_max": 0}, "spool_max"),
        ({"endpoint": "localhost", "racer_id": 1, "port": 70000}, "port"),
        ({"endpoint": "localhost", "racer_id": 1, "sensor": "abacus"}, "sensor"),
    ],
)
def test_inconsistent_settings_are_refused(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(flags, {})


def test_plain_tcp_to_a_remote_broker_needs_insecure() -> None:
    config = load_config({"endpoint": "broker.lan", "racer_id": 1, "insecure": True}, {})
    assert not config.tls
    config = load_config({"endpoint": "broker.lan", "racer_id": 1, **TLS}, {})
    assert config.tls


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True),
     ("10.0.0.1", False), ("iot.example.com", False)],
)  # fmt: skip
def test_loopback_hosts_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_spool_defaults_to_the_systemd_state_directory() -> None:
    assert default_spool_path({"STATE_DIRECTORY": "/var/lib/alleycat"}) == Path(
        "/var/lib/alleycat/spool.sqlite3"
    )
    assert default_spool_path({"HOME": "/home/r"}) == Path(
        "/home/r/.local/state/alleycat/spool.sqlite3"
    )


def test_a_bike_reporting_ten_times_its_resistance_is_scaled_from_the_config(
    tmp_path: Path,
) -> None:
    from alleycat_rider.cli import sensor_options

    config_file = tmp_path / "rider.toml"
    config_file.write_text(
        'endpoint = "127.0.0.1"\nracer_id = 3\nsensor = "ble"\nftms_resistance_scale = 0.1\n'
    )
    config = load_config({}, {}, config_file)
    assert sensor_options(config).ftms_resistance_scale == 0.1
    plain = load_config({"endpoint": "127.0.0.1", "racer_id": 3}, {})
    assert sensor_options(plain).ftms_resistance_scale == 1.0


def test_calibration_and_the_keiser_id_come_from_file_environment_and_flags(
    tmp_path: Path,
) -> None:
    from alleycat_rider.cli import sensor_options
    from alleycat_rider.sensors import open_sensor
    from alleycat_rider.sensors.base import CalibratedSensor, Calibration

    path = write(
        tmp_path,
        'endpoint = "localhost"\nracer_id = 1\nsensor = "keiser"\nkeiser_id = 12\n'
        "cadence_scale = 1.05\nresistance_scale = 2\nresistance_offset = -10\n",
    )
    env = {"ALLEYCAT_RESISTANCE_SCALE": "0.5", "ALLEYCAT_KEISER_ID": "14"}
    config = load_config({"resistance_offset": 3.5}, env, path)
    options = sensor_options(config)

    assert (options.kind, options.keiser_id) == ("keiser", 14)
    assert options.calibration == Calibration(
        cadence_scale=1.05, resistance_scale=0.5, resistance_offset=3.5
    )
    sensor = open_sensor(options)
    assert isinstance(sensor, CalibratedSensor)
    sensor.close()
    plain = sensor_options(load_config({"endpoint": "localhost", "racer_id": 1}, {}))
    assert plain.calibration.is_identity and plain.keiser_id is None


def test_mock_ranges_and_the_peloton_map_come_from_file_environment_and_flags(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        'endpoint = "localhost"\nracer_id = 1\nmock_cadence = [40, 70]\n'
        'mock_resistance = "10:20"\npeloton_resistance_map = [[0, 0], [1000, 100]]\n',
    )
    env = {"ALLEYCAT_MOCK_RESISTANCE": "15:25.5", "ALLEYCAT_PELOTON_RESISTANCE_MAP": "0:0, 500:40"}
    config = load_config({"mock_cadence": (50.0, 60.0)}, env, path)
    assert config.mock_cadence == (50.0, 60.0)
    assert config.mock_resistance == (15.0, 25.5)
    assert config.peloton_resistance_map == ((0.0, 0.0), (500.0, 40.0))

    from_file = load_config({}, {}, path)
    assert from_file.mock_cadence == (40.0, 70.0)
    assert from_file.mock_resistance == (10.0, 20.0)
    assert from_file.peloton_resistance_map == ((0.0, 0.0), (1000.0, 100.0))


def test_without_mock_ranges_or_a_peloton_map_the_sensor_gets_the_defaults() -> None:
    from alleycat_rider.cli import sensor_options
    from alleycat_rider.core.physiology import DEFAULT_BOUNDS

    options = sensor_options(load_config({"endpoint": "localhost", "racer_id": 1}, {}))
    assert options.bounds == DEFAULT_BOUNDS
    assert options.peloton_resistance_map == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mock_cadence = [70, 40]", r"mock_cadence in .* must be a range: need 0 <= MIN < MAX"),
        ("mock_cadence = [-5, 40]", r"need 0 <= MIN < MAX, not \[-5, 40\]"),
        ("mock_cadence = [40, 50, 60]", "expected MIN:MAX"),
        ('mock_resistance = "ten:twenty"', "mock_resistance .* expected MIN:MAX, not 'ten:twenty'"),
        ('mock_resistance = "30:nan"', "expected MIN:MAX"),
        ("mock_resistance = 30", "mock_resistance in .* must be a range, not 30"),
        ("peloton_resistance_map = [[1000, 100], [0, 0]]", "RAW must increase"),
        ('peloton_resistance_map = "0:0,0:10"', "RAW must increase"),
        ("peloton_resistance_map = [[0, 0]]", "need at least two RAW:LEVEL points"),
        ('peloton_resistance_map = "0=0,1000=100"', "expected RAW:LEVEL,RAW:LEVEL"),
        ("peloton_resistance_map = [[0, true], [1, 2]]", "expected RAW:LEVEL"),
    ],
)
def test_a_bad_range_or_calibration_in_the_file_is_one_clear_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, f'endpoint = "localhost"\nracer_id = 1\n{text}\n')
    with pytest.raises(ConfigError, match=message):
        load_config({}, {}, path)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ALLEYCAT_MOCK_CADENCE", "40", "ALLEYCAT_MOCK_CADENCE must be a range: expected MIN:MAX"),
        ("ALLEYCAT_MOCK_RESISTANCE", "20:20", "need 0 <= MIN < MAX, not '20:20'"),
        ("ALLEYCAT_PELOTON_RESISTANCE_MAP", "0:0;1000:100", "must be a point list: expected"),
        ("ALLEYCAT_PELOTON_RESISTANCE_MAP", "500:50,100:10", "RAW must increase"),
    ],
)
def test_a_bad_range_or_calibration_in_the_environment_names_the_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"endpoint": "localhost", "racer_id": 1}, {variable: value})


def test_relative_paths_in_the_config_file_are_relative_to_the_file(tmp_path: Path) -> None:
    bike = tmp_path / "bike"
    bike.mkdir()
    path = bike / "rider.toml"
    path.write_text(
        'endpoint = "iot.example.com"\nracer_id = 1\ncert = "certificate.pem.crt"\n'
        'key = "keys/private.pem.key"\nca = "/etc/alleycat/ca.pem"\nspool = "../state/s.db"\n'
    )
    config = load_config({}, {}, path)
    assert config.cert == bike / "certificate.pem.crt"
    assert config.key == bike / "keys" / "private.pem.key"
    assert config.ca == Path("/etc/alleycat/ca.pem")
    assert config.spool == bike / ".." / "state" / "s.db"

    # Flags and the environment are relative to the working directory, as on any command line.
    override = load_config({"key": Path("my.key")}, {"ALLEYCAT_SPOOL": "s.db"}, path)
    assert (override.key, override.spool) == (Path("my.key"), Path("s.db"))


def test_own_topic_publishes_on_the_topic_under_the_client_id(tmp_path: Path) -> None:
    path = write(tmp_path, 'endpoint = "localhost"\nracer_id = 3\nclient_id = "bike-3"\n')
    home = {"HOME": "/h"}
    assert load_config({}, home, path).topic == "alleycat-publish"
    assert load_config({"own_topic": True}, home, path).topic == "alleycat-publish/bike-3"
    env = {**home, "ALLEYCAT_OWN_TOPIC": "true", "ALLEYCAT_TOPIC": "rides"}
    assert load_config({}, env, path).topic == "rides/bike-3"
    assert load_config({"own_topic": False}, env, path).topic == "rides"
    in_file = write(tmp_path, 'endpoint = "localhost"\nracer_id = 4\nown_topic = true\n')
    assert load_config({}, home, in_file).topic == "alleycat-publish/alleycat-4"


def test_a_first_boot_needs_the_claim_and_the_serial_number_and_no_certificate() -> None:
    claim = {
        "endpoint": "iot.example.com",
        "racer_id": 17,
        "fleet_template": "alleycat-bikes",
        "claim_cert": Path("/claim.crt"),
        "claim_key": Path("/claim.key"),
        "serial_number": "SN-17",
    }
    config = load_config(claim, {"HOME": "/h"})
    assert (config.cert, config.client_id, config.port) == (None, "SN-17", 8883)
    for missing, flag in (
        ("claim_cert", "--claim-cert"),
        ("claim_key", "--claim-key"),
        ("serial_number", "--serial-number"),
    ):
        with pytest.raises(ConfigError, match=f"enrolling with --fleet-template needs {flag}"):
            load_config({**claim, missing: None}, {"HOME": "/h"})
    # An enrolled bike's own certificate wins: the template is not used.
    enrolled = load_config({**claim, **TLS, "claim_cert": None}, {"HOME": "/h"})
    assert enrolled.cert == Path("/c.pem")
    # The key is the bike's unless IoT Core is asked to make it.
    assert config.enrol_keys == "bike"
    env = {"HOME": "/h", "ALLEYCAT_ENROL_KEYS": "service"}
    assert load_config(claim, env).enrol_keys == "service"
    with pytest.raises(ConfigError, match="enrol_keys must be one of bike, service, not 'cloud'"):
        load_config({**claim, "enrol_keys": "cloud"}, {"HOME": "/h"})
