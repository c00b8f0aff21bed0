"""The `council` command line: the app, its commands in the order `--help` lists them, and ``main``.

Each command group lives in a module of its own (`run`, `night`, `library`, `episodes`, `evals`, `benchmarks`,
`daemon`); ``main`` turns errors into one line and an exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast, get_args, get_type_hints

import click
import typer
import typer.main
from rich.text import Text
from typer.core import TyperGroup, TyperOption

try:
    from typer._click import exceptions as typer_click
except ImportError:  # typer before 0.29 uses click itself
    typer_click = None  # type: ignore[assignment]

from council.cli import benchmarks, daemon, episodes, evals, library, night, run
from council.cli._common import err
from council.core.errors import CouncilError, Interrupt
from council.core.extras import missing_extra
from council.core.text import invalid_text, printable

app = typer.Typer(
    help="A persona that pauses to reflect, and a council of archetypes that votes continue, revise or let go.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(run.run)
app.command()(night.sleep)
app.command()(night.nights)
app.command("train")(night.train_command)
app.command()(daemon.serve)
app.command("worker")(daemon.worker_command)
app.command()(run.ask)
app.add_typer(library.archetypes_app, name="archetypes")
app.add_typer(library.pools_app, name="pools")
app.add_typer(episodes.logs_app, name="logs")
app.add_typer(episodes.memory_app, name="memory")
app.add_typer(evals.eval_app, name="eval")
app.add_typer(evals.experiment_app, name="experiment")
app.add_typer(evals.report_app, name="report")
app.add_typer(benchmarks.bench_app, name="bench")
app.add_typer(night.persona_app, name="persona")


# typer 0.29 and later raise their own copy of click's usage errors; older ones raise click's.
USAGE_ERRORS: tuple[type[Exception], ...] = (
    click.ClickException,
    *([typer_click.ClickException] if typer_click else []),
)


SHOWN_CHARS = 40  # how much of a refused argument the error repeats


def _check_text(args: list[str]) -> None:
    """Refuse a text argument that is not valid text (bytes that are not UTF-8 reach Python as lone surrogates).

    A path's argument is exempt: a file name may be any bytes, and ``Path`` carries them through.
    """
    refused = [(i, arg, problem) for i, arg in enumerate(args) if (problem := invalid_text(arg)) is not None]
    paths = _path_arguments(args) if refused else set()
    for i, arg, problem in refused:
        if i not in paths:
            shown = printable(arg)
            shown = shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + "…"
            raise CouncilError(f"argument {i + 1} ('{shown}') is {problem}", "pass UTF-8 text")


def _path_arguments(args: list[str]) -> set[int]:
    """Indices of ``args`` that a parameter typed ``Path`` takes (as an option's value or positionally)."""
    command = typer.main.get_command(app)
    i = 0
    while isinstance(command, TyperGroup) and i < len(args) and args[i] in command.commands:
        command, i = command.commands[args[i]], i + 1
    if command.callback is None:
        return set()
    hints = get_type_hints(command.callback)
    paths = {name for name, hint in hints.items() if Path in (hint, *get_args(hint))}
    options = {o: p for p in command.params if isinstance(p, TyperOption) for o in (*p.opts, *p.secondary_opts)}
    positional = [p for p in command.params if not isinstance(p, TyperOption)]
    found: set[int] = set()
    while i < len(args):
        name, inline, _ = args[i].partition("=")
        option = options.get(name)
        if option is not None:
            takes = not option.is_flag and not inline  # the value is the next argument
            if option.name in paths:
                found.add(i + 1 if takes else i)
            i += 2 if takes else 1
            continue
        if positional:
            if positional[0].name in paths:
                found.add(i)
            if positional[0].nargs != -1:
                positional.pop(0)
        i += 1
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one line and exit code 1; ``--debug`` or COUNCIL_DEBUG=1 shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("COUNCIL_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        _check_text(args)
        code = app(args=args, prog_name="council", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except Interrupt as exc:
        err.print(printable(str(exc)))
        return exc.exit_code
    except USAGE_ERRORS as exc:
        usage = cast(click.ClickException, exc)  # typer's copy of the class has the same interface
        usage.show()
        return usage.exit_code
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        return 130
    except Exception as exc:
        if debug:
            raise
        known = missing_extra(exc) if isinstance(exc, ModuleNotFoundError) else exc
        line = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        line = str(known) if isinstance(known, CouncilError) else line
        err.print(Text("error: ", style="red") + Text(printable(line)), soft_wrap=True)
        return 1
    if code == 130:  # typer answers a KeyboardInterrupt with exit code 130 in place of the command's result
        err.print("interrupted")
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
