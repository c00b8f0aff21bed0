"""Run one episode from Python, with your own checkpointer, printing each reflection point.

python examples/run_episode.py "How do I say no to extra work without feeling guilty?"
"""

import sys

from langgraph.checkpoint.memory import InMemorySaver

from council import EpisodeEvent, Voted, build_runtime, load_settings, run_episode

prompt = sys.argv[1] if len(sys.argv) > 1 else "How do I say no to extra work without feeling guilty?"
runtime = build_runtime(load_settings(pool="default"))


def show(event: EpisodeEvent) -> None:
    """Print each vote of the council as it happens."""
    match event:
        case Voted(point):
            votes = ", ".join(f"{v.archetype}={v.verdict}:{v.confidence:.2f}" for v in point.votes)
            print(f"[{point.index}] {point.segment.strip()!r}\n    {votes} -> {point.decision.decision}")


episode = run_episode(runtime, prompt, show, checkpointer=InMemorySaver())
print("\n" + episode.final_text)
