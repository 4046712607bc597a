"""``alleycat locust``: Locust on the locustfile the package ships, every other argument Locust's.

The command replaces itself with ``python -m locust -f <our locustfile> ARGS`` (``exec``), so
Locust's own options, signals, exit codes and ``--processes`` forking behave as its
documentation says. A ``-f`` given by the user (a load shape, say) is loaded beside ours.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click

#: The locustfile Locust runs: the Rider user and our listeners.
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: Load shapes shipped with the package, by the name ``-f`` may give instead of a path.
SHAPES = {"race-start": Path(__file__).with_name("race_start.py")}
INSTALL_HINT = "alleycat locust needs Locust: pip install 'alleycat[locust]'"


def options_help() -> str:
    """The help of our options, as Locust's parser would show them."""
    import argparse

    from simulator.distributed.options import add_arguments

    parser = argparse.ArgumentParser(
        prog="alleycat locust", add_help=False, usage=argparse.SUPPRESS
    )
    add_arguments(parser)
    return parser.format_help().strip() + "\n\nLocust's own options follow.\n"


def locust_installed() -> bool:
    """Whether Locust can be imported here."""
    return importlib.util.find_spec("locust") is not None


def locust_argv(args: Sequence[str]) -> list[str]:
    """Locust's command line: our locustfile first, then any the user named, then the rest."""
    files = [str(LOCUSTFILE)]
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        if arg in ("-f", "--locustfile"):
            given = next(items, None)
            if given is None:
                rest.append(arg)
                continue
        elif arg.startswith("--locustfile="):
            given = arg.split("=", 1)[1]
        else:
            rest.append(arg)
            continue
        for name in given.split(","):
            files.append(str(SHAPES[name]) if name in SHAPES else name)
    return [sys.executable, "-m", "locust", "-f", ",".join(files), *rest]


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def locust(args: tuple[str, ...]) -> None:
    """Run the fleet on Locust: every argument is Locust's (alleycat locust --help)."""
    if not locust_installed():
        click.echo(INSTALL_HINT, err=True)
        sys.exit(2)
    wants_html = any(a == "--summary-html" or a.startswith("--summary-html=") for a in args)
    if wants_html and importlib.util.find_spec("plotly") is None:
        click.echo("--summary-html needs plotly: pip install 'alleycat[report]'", err=True)
        sys.exit(2)
    argv = locust_argv(args)
    if "-h" in args or "--help" in args:
        # Locust prints its help before it loads a locustfile, so without ours: ours first,
        # then Locust's, from a child (this process carries on, as a help command should).
        click.echo(options_help())
        shown = subprocess.run(argv, capture_output=True, text=True, check=False)
        click.echo(shown.stdout + shown.stderr, nl=False)
        sys.exit(shown.returncode)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
