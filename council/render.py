"""Rich terminal output for episodes: segments, reflection points, votes and decisions."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from council.core.episode import Episode, Recollection, ReflectionPoint
from council.engine.events import Closed, Drafted, EpisodeEvent, Recalled, Revised, Voted

_DECISION_STYLE = {"continue": "green", "revise": "yellow", "let_go": "magenta"}


STEERING_NOTE = "steering text found"  # sentences addressed to its judges: judged without them


def votes_table(point: ReflectionPoint) -> Table:
    """A table of one reflection point's votes."""
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    table.add_column("archetype")
    table.add_column("verdict")
    table.add_column("confidence", justify="right")
    table.add_column("P(let go)", justify="right")
    table.add_column("P(revise)", justify="right")
    table.add_column("comment", overflow="fold")
    for v in point.votes:
        verdict = Text(v.verdict or "abstain", style=_DECISION_STYLE.get(v.verdict or "", "red"))
        shown = [f"{v.probs[k]:.2f}" if v.verdict and k in v.probs else "" for k in ("let_go", "revise")]
        note = v.comment or v.error or (STEERING_NOTE if v.steering else "")
        table.add_row(v.archetype, verdict, f"{v.confidence:.2f}", *shown, note)
    return table


def decision_line(point: ReflectionPoint) -> Text:
    """The council's decision with support, rule and dissent."""
    d = point.decision
    line = Text("  council: ", style="bold")
    line.append(d.decision, style=f"bold {_DECISION_STYLE[d.decision]}")
    line.append(f"  support {d.support:.0%} · {d.rule} · {d.reason}", style="dim")
    if d.dissent:
        line.append(f" · dissent: {', '.join(d.dissent)}", style="dim")
    if d.abstained:
        line.append(f" · abstained: {', '.join(d.abstained)}", style="red")
    return line


class LiveEpisode:
    """Prints each step of an episode as it happens."""

    def __init__(self, console: Console):
        self.console = console

    def __call__(self, event: EpisodeEvent) -> None:
        """Render one event of the episode's stream."""
        match event:
            case Recalled(recollections):
                recollections_table(self.console, recollections)
            case Drafted(segment):
                self.console.print(Text(segment["text"].strip(), style="bold"))
            case Voted(point):
                self._point(point)
            case Revised(point, segment):
                for v in point.votes:
                    if v.comment:
                        self.console.print(Text(f"  {v.archetype}: {v.comment}", style="yellow"))
                self.console.print(Text("  rewritten: ", style="yellow") + Text(segment["text"].strip()))
            case Closed() as closed:
                label = "  let go: " if closed.status == "let_go" else "  token budget reached: "
                self.console.print(Text(label, style="magenta") + Text(closed.closing.strip()))

    def _point(self, point: ReflectionPoint) -> None:
        self.console.print(Text(f"  ⟨reflection point {point.index} · {point.boundary}⟩", style="cyan"))
        self.console.print(votes_table(point))
        self.console.print(decision_line(point))


def recollections_table(console: Console, recollections: list[Recollection]) -> None:
    """Recalled memories, best first, with their similarity."""
    if not recollections:
        return
    console.print(Text("recalled:", style="bold green"))
    table = Table(box=None, header_style="dim", padding=(0, 2))
    for col in ("score", "kind", "from", "memory"):
        table.add_column(col, overflow="fold", no_wrap=col != "memory")
    for r in recollections:
        table.add_row(f"{r.score:.2f}", r.kind, r.episode_id, " / ".join(r.text.splitlines())[:300])
    console.print(table)


def print_episode(console: Console, episode: Episode) -> None:
    """Render a stored episode in full."""
    console.print(Text(f"episode {episode.episode_id}", style="bold") + Text(f"  {episode.created_at:%Y-%m-%d %H:%M}"))
    console.print(Text(f"persona {episode.persona} · pool {episode.pool} · {episode.status}", style="dim"))
    console.print(Text("prompt: ", style="bold") + Text(episode.prompt))
    recollections_table(console, episode.recollections)
    for point in episode.reflection_points:
        console.print(Text(point.segment.strip()))
        LiveEpisode(console)._point(point)
    console.print(Text("final answer:", style="bold"))
    console.print(episode.final_text)
    if episode.stop_reason:
        console.print(Text(f"stopped: {episode.stop_reason}", style="dim"))


def episodes_table(episodes: list[Episode]) -> Table:
    """One line per episode: the prompt, on one line, takes the width left and ends in an ellipsis if cut."""
    table = Table(box=None, header_style="bold", padding=(0, 1), pad_edge=False)
    for col in ("id", "created", "pool", "status", "points", "prompt"):
        table.add_column(col, overflow="ellipsis", no_wrap=col != "prompt")  # the prompt column shrinks first
    for e in episodes:
        table.add_row(
            e.episode_id,
            f"{e.created_at:%Y-%m-%d %H:%M}",
            e.pool,
            e.status,
            str(len(e.reflection_points)),
            Text(" ".join(e.prompt[:500].split()), no_wrap=True, overflow="ellipsis"),
        )
    return table
