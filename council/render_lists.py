"""Terminal listings, one line per item: the library's archetypes and pools, and a flat report's ``key value`` lines.

Apart from ``council.render``, so that listing the library loads none of the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.console import Console

from archetypes.definitions import Archetype, Pool


def print_report(console: Console, data: Mapping[str, object]) -> None:
    """A flat report as aligned ``key value`` lines."""
    width = max(map(len, data)) + 2
    for key, value in data.items():
        console.print(f"{key:<{width}} {value}")


def print_archetypes(console: Console, archetypes: Iterable[Archetype]) -> None:
    """One line per archetype: name, title, weight, what it votes with, voice, and whether it may veto."""
    for a in archetypes:
        veto = " [veto]" if a.veto else ""
        judge = "judge" if a.judge and a.judge.weights_sha256 else "unfitted judge" if a.judge else "tokens"
        console.print(f"[bold]{a.name:<14}[/] {a.title:<14} w={a.weight:<4} {judge:<15} {a.voice}{veto}")


def print_pools(console: Console, pools: Iterable[Pool]) -> None:
    """One line per pool: its name, rule and members."""
    for p in pools:
        console.print(f"[bold]{p.name:<10}[/] {p.rule:<18} {', '.join(p.archetypes)}")
