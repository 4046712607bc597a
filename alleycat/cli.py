"""The root ``alleycat`` command.

Subcommands are imported only when invoked, so that ``alleycat ride`` on a bike never loads
boto3, rich's dashboard or the simulator, and ``alleycat --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

#: Subcommand name -> (``module:attribute``, one-line summary for ``--help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "ride": ("alleycat_rider.cli:ride", "Run the rider agent: read the bike, publish over MQTT."),
    "simulate": ("simulator.cli:simulate", "Drive virtual riders into Kinesis, or over MQTT."),
    "compare": (
        "simulator.compare.cli:compare",
        "Compare partition keys, batching modes or ingestion paths.",
    ),
    "verify": ("simulator.verify.cli:verify", "Read a stream back and check every message."),
    "certs": ("alleycat_rider.iot.certs_cli:certs", "Make development certificates."),
    "broker": ("alleycat_rider.iot.certs_cli:broker", "Run a local mutual-TLS MQTT broker."),
    "provision": ("alleycat_rider.iot.provision_cli:provision", "Enrol a bike in AWS IoT Core."),
    "rule": ("simulator.backend.cli:rule", "Stand in for the IoT rule: MQTT into Kinesis."),
    "standings": ("simulator.backend.cli:standings", "Stand in for the standings backend."),
    "stack": ("simulator.backend.cli:stack", "Run a whole Alleycat locally: broker to standings."),
    "locust": ("simulator.distributed.cli:locust", "Run the fleet on Locust's runners."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    @staticmethod
    def _available(name: str) -> bool:
        module_name = COMMANDS[name][0].split(":")[0]
        return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alleycat")
def cli() -> None:
    """Alleycat: an exercise-bike rider agent, a fleet simulator and a local stand-in for AWS.

    Start with `alleycat simulate --riders 1000 --fast` (no AWS account needed), run the whole
    system here with `alleycat stack`, or see `alleycat COMMAND --help` for any command below.
    """


def main() -> None:
    """Run the ``alleycat`` command line."""
    cli()
