"""The root ``alleycat`` command.

Subcommands are imported only when invoked, so that ``alleycat ride`` on a bike never loads
boto3, rich's dashboard or the simulator, and ``alleycat --help`` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

import click

#: The exit status of a run stopped by Ctrl-C, as shells report it (128 + SIGINT).
INTERRUPTED = 130

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
    """A group whose subcommands are imported on first use, and that reports errors in one line.

    Every subcommand runs inside :meth:`main`, so the rules hold for all of them: a usage error
    is ``Error: ...`` on stderr and exit 2 (no usage block), any other error ``Error: ...`` and
    its exit status, and a Ctrl-C that no command handles exits 130.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            exc.ctx = None  # without its context, click shows the one line, not the usage
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):
                sys.exit(INTERRUPTED)
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # A command ends normally (None) or with click.exceptions.Exit, whose status click returns.
        sys.exit(status if isinstance(status, int) else 0)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        if self.get_command(ctx, name) is None and not name.startswith("-"):
            # click looks for close matches only among commands it has loaded; ours are lazy.
            message = f"No such command {name!r}."
            matches = similar(name, self.list_commands(ctx))
            if matches:
                message += " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
            raise click.exceptions.NoSuchCommand(name, message, ctx=ctx)
        return super().resolve_command(ctx, args)

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


def similar(name: str, commands: Sequence[str]) -> list[str]:
    """The commands a mistyped ``name`` probably meant: those it begins, else close spellings."""
    started = [c for c in commands if len(name) >= 2 and c.startswith(name)]
    return started[:3] or difflib.get_close_matches(name, commands, n=3)


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
