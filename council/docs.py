"""The README's reference tables, generated from the code: commands, settings and migrations.

``python -m council.docs`` rewrites them in README.md between ``<!-- generated: NAME -->`` and
``<!-- end generated -->``; a test fails whenever the README and the code disagree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from typer.core import TyperArgument, TyperGroup, TyperOption

from council.cli import app
from council.core.settings import Settings
from council.store.database import MIGRATIONS

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n).*?(<!-- end generated -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _usage(command: typer.core.TyperCommand | TyperGroup) -> str:
    parts = []
    for param in command.params:
        if isinstance(param, TyperArgument):
            name = (param.metavar or param.name or "").upper()
            parts.append(name if param.required else f"[{name}]")
        elif isinstance(param, TyperOption) and param.opts[0] != "--help":
            flag = "/".join([param.opts[0], *param.secondary_opts])
            parts.append(f"[{flag}]" if param.is_flag else f"[{flag} {(param.metavar or param.name or '').upper()}]")
    return " ".join(parts)


def _commands(group: TyperGroup, path: list[str]) -> Iterator[tuple[str, str]]:
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            if command.invoke_without_command:  # a group that is also a command (`council bench`)
                yield " ".join([*path, name, _usage(command)]), (command.help or "").strip().splitlines()[0]
            yield from _commands(command, [*path, name])
        elif isinstance(command, typer.core.TyperCommand):
            usage = " ".join(p for p in [*path, name, _usage(command)] if p)
            yield usage, (command.help or "").strip().splitlines()[0]


def commands_table() -> str:
    """Every CLI command with its arguments and options, and the first line of its help."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    rows = [f"| `{_cell(usage)}` | {_cell(summary)} |" for usage, summary in _commands(root, ["council"])]
    return "\n".join(["| command | what it does |", "| --- | --- |", *rows])


def _settings(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _settings(kind, f"{prefix}{name}.")
            continue
        default = "(see description)" if field.default is PydanticUndefined else f"`{field.default!r}`"
        yield f"{prefix}{name}", default, field.description or ""


def settings_table() -> str:
    """Every setting: its name, default, environment variable and meaning."""
    rows = [
        f"| `{name}` | {_cell(default)} | `COUNCIL_{name.upper().replace('.', '__')}` | {_cell(meaning)} |"
        for name, default, meaning in _settings(Settings, "")
    ]
    return "\n".join(["| setting | default | environment | meaning |", "| --- | --- | --- | --- |", *rows])


def migrations_table() -> str:
    """Every migration, in order, with the first line of its docstring."""
    rows = []
    for path in sorted((MIGRATIONS / "versions").glob("[0-9]*.py")):
        doc = re.search(r'"""(.*?)\n', path.read_text(encoding="utf-8"))
        rows.append(f"| `{path.stem}` | {_cell(doc.group(1).strip() if doc else '')} |")
    return "\n".join(["| migration | what it changes |", "| --- | --- |", *rows])


TABLES: dict[str, Callable[[], str]] = {
    "commands": commands_table,
    "settings": settings_table,
    "migrations": migrations_table,
}


def render(readme: str) -> str:
    """``readme`` with every generated block replaced by what the code says now."""
    return _BLOCK.sub(lambda m: f"{m.group(1)}{TABLES[m.group(2)]()}\n{m.group(3)}", readme)


def main() -> int:
    """Rewrite the README's generated tables; with ``--check``, exit 1 if they are out of date."""
    text = README.read_text(encoding="utf-8")
    fresh = render(text)
    if "--check" in sys.argv:
        return int(fresh != text)
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
