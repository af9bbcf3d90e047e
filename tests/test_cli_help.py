"""``--help`` of every kgrec command: listed with a whole one-line purpose, and with an example.

Commands are found by walking the click group, so a new command is checked without
touching this file. Help is rendered for an 80-column terminal, the common worst case.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from kgrec.cli import cli

TERMINAL_WIDTH = 80


def walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group`` as ``(path, command)``, e.g. ``(("db", "start"), <Command>)``."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


COMMANDS = list(walk(cli))
GROUPS = [((), cli)] + [(path, command) for path, command in COMMANDS if isinstance(command, click.Group)]

TRUNCATED_IN_LISTING: dict[tuple[str, ...], str] = {}
WITHOUT_EXAMPLE: dict[tuple[str, ...], str] = {}


def show_help(path: tuple[str, ...]) -> Result:
    return CliRunner().invoke(cli, [*path, "--help"], terminal_width=TERMINAL_WIDTH, prog_name="kgrec")


def _param(path: tuple[str, ...], known: dict[tuple[str, ...], str]):
    marks = [pytest.mark.xfail(reason=known[path], strict=True)] if path in known else []
    return pytest.param(path, id=" ".join(path) or "kgrec", marks=marks)


def test_walk_finds_the_core_commands():
    paths = {path for path, _ in COMMANDS}
    assert {("db",), ("db", "start"), ("db", "stop"), ("db", "status"), ("sample-data",), ("build-graph",)} <= paths


def _listing(help_text: str) -> dict[str, str]:
    """The ``Commands:`` section of a group's help as ``{name: line}``."""
    lines = help_text.split("Commands:\n", 1)[1].splitlines()
    return {line.split()[0]: line for line in lines if line.startswith("  ") and line.strip()}


@pytest.mark.parametrize("path", [_param(path, TRUNCATED_IN_LISTING) for path, command in COMMANDS if not command.hidden])
def test_help_lists_each_command_with_a_whole_one_line_purpose(path: tuple[str, ...]):
    *parent, name = path
    result = show_help(tuple(parent))
    assert result.exit_code == 0, result.output

    listing = _listing(result.output)
    assert name in listing, f"{name!r} missing from the command list of {' '.join(['kgrec', *parent])} --help:\n{result.output}"
    line = listing[name]
    purpose = line.strip()[len(name) :].strip()
    assert purpose, f"{name!r} is listed without a purpose"
    assert "..." not in line, f"click cut the purpose of {name!r}: {line.strip()!r}"


@pytest.mark.parametrize("path", [pytest.param(path, id=" ".join(path) or "kgrec") for path, _ in GROUPS])
def test_group_help_lists_every_registered_command(path: tuple[str, ...]):
    group = cli if not path else dict(COMMANDS)[path]
    result = show_help(path)
    assert result.exit_code == 0, result.output
    assert set(_listing(result.output)) == {name for name, command in group.commands.items() if not command.hidden}


@pytest.mark.parametrize("path", [_param(path, WITHOUT_EXAMPLE) for path, _ in COMMANDS])
def test_help_of_every_command_exits_0_and_shows_an_example(path: tuple[str, ...]):
    result = show_help(path)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert f"Usage: kgrec {' '.join(path)}" in result.output
    assert "Example" in result.output, f"kgrec {' '.join(path)} --help has no example:\n{result.output}"
