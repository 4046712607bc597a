"""The architecture the tree shows: which package may import which, and no import circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("alleycat", "alleycat_rider", "simulator")


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of our packages, by dotted name."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere: at the top, inside functions, for type checking."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Our modules and the other modules of ours each one imports."""
    ours = dict(modules())
    return {
        name: {m for m in imports_of(path) if m in ours and m != name}
        for name, path in ours.items()
    }


def test_the_rider_agent_never_imports_the_simulator_or_boto3() -> None:
    offenders = {
        name: sorted(m for m in imports_of(path) if m.split(".")[0] in {"simulator", "boto3"})
        for name, path in modules()
        if name.startswith("alleycat_rider")
    }
    # provision enrols a bike in AWS from a workstation, and fleet a factory image's claim
    # certificate; nothing else on the rider side needs boto3.
    offenders.pop("alleycat_rider.iot.provision")
    offenders.pop("alleycat_rider.iot.fleet")
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_module_imports_the_simulator_from_the_rider_side_even_lazily() -> None:
    graph = import_graph()
    rider = {name for name in graph if name.startswith("alleycat_rider")}
    crossing = {(a, b) for a in rider for b in graph[a] if b.startswith("simulator")}
    assert crossing == set()


def test_there_are_no_import_circles() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            if circle := visit(target, [*path, name]):
                return circle
        done.add(name)
        return None

    circles = [c for name in sorted(graph) if (c := visit(name, []))]
    assert circles == []


@pytest.mark.parametrize(
    "code",
    [
        "import alleycat_rider, alleycat_rider.agent.loop, alleycat_rider.cli,"
        " alleycat_rider.sensors",
        "from alleycat.cli import cli\n"
        "try:\n    cli(['ride', '--help'], prog_name='alleycat')\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "ride --help"],
)
def test_the_agent_loads_neither_simulator_boto3_nor_rich_off_a_terminal(code: str) -> None:
    probe = (
        f"{code}\nimport sys\n"
        "heavy = {m.split('.')[0] for m in sys.modules}\n"
        "heavy &= {'simulator', 'boto3', 'botocore', 'rich'}\n"
        "print('loaded:', ','.join(sorted(heavy)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "loaded:"


def test_the_engine_imports_only_itself_its_errors_and_the_shared_core() -> None:
    # The engine is the bottom of the simulator: reports, compare, sinks and the CLI read what it
    # counted; it never reaches up into them.
    allowed = ("simulator.engine", "simulator.errors", "alleycat_rider.core")
    graph = import_graph()
    upward = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("simulator.engine")
        for target in targets
        if not target.startswith(allowed)
    }
    assert upward == set()


def test_only_the_ride_command_and_its_settings_reach_into_the_agents_room() -> None:
    # alleycat_rider/agent/ is the agent on the bike; the pieces it shares with the simulator and
    # the workstation (core, sensors, iot, mqtt, ...) never import it. The ride command runs it,
    # and the configuration takes the spool's defaults from it.
    def in_room(name: str) -> bool:
        return name == "alleycat_rider.agent" or name.startswith("alleycat_rider.agent.")

    allowed = {"alleycat_rider.cli", "alleycat_rider.config"}
    reaching = {
        (name, target)
        for name, targets in import_graph().items()
        if not in_room(name) and name not in allowed
        for target in targets
        if in_room(target)
    }
    assert reaching == set()
