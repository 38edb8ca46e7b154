"""Every command-line option says what it is for: `sadpipe COMMAND --help` and the benchmarks'
`python -m sadpipe.bench.NAME --help` are what a newcomer reads."""
import importlib
import pkgutil

import click
import pytest

import sadpipe.bench
from sadpipe.cli import cli


def _sadpipe_commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(cli)
    return [(f"sadpipe {name}", cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]


def _bench_commands() -> list[tuple[str, click.Command]]:
    found = []
    for info in pkgutil.iter_modules(sadpipe.bench.__path__):
        module = importlib.import_module(f"sadpipe.bench.{info.name}")
        if isinstance(getattr(module, "main", None), click.Command):
            found.append((f"python -m sadpipe.bench.{info.name}", module.main))
    return found


def _undocumented(command: click.Command) -> list[str]:
    return [param.opts[0] for param in command.params
            if isinstance(param, click.Option) and not (param.help or "").strip()]


def test_the_command_lists_are_not_empty():
    """The checks below would pass vacuously on empty lists."""
    names = [name for name, _ in _sadpipe_commands()]
    assert {"sadpipe train", "sadpipe eval", "sadpipe pseudo-label", "sadpipe cache-logits"} <= set(names)
    assert "python -m sadpipe.bench.inference" in [name for name, _ in _bench_commands()]


@pytest.mark.parametrize("name, command", _sadpipe_commands() + _bench_commands(),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_option_has_help_text(name, command):
    assert command.help or command.short_help, f"{name} has no description"
    assert _undocumented(command) == [], f"{name}: options without help text"


def test_an_option_without_help_is_found():
    """The check itself: a command with one bare option is reported."""
    @click.command()
    @click.option("--documented", help="Says what it does.")
    @click.option("--bare")
    def command(documented, bare):
        """A command."""

    assert _undocumented(command) == ["--bare"]
