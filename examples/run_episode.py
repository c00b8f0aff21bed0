"""Run one episode from Python, with your own checkpointer, printing each reflection point.

python examples/run_episode.py "How do I say no to extra work without feeling guilty?"
"""

import sys

from langgraph.checkpoint.memory import InMemorySaver

from council.core.episode import ReflectionPoint
from council.core.settings import load_settings
from council.engine.graph import builder, initial_state
from council.engine.runner import build_runtime, new_episode_id

prompt = sys.argv[1] if len(sys.argv) > 1 else "How do I say no to extra work without feeling guilty?"
runtime = build_runtime(load_settings(pool="default"))
graph = builder.compile(checkpointer=InMemorySaver())
episode_id = new_episode_id()
config = {"configurable": {"thread_id": episode_id}}

for chunk in graph.stream(initial_state(episode_id, prompt), config, stream_mode="updates", context=runtime):
    for node, update in chunk.items():
        if node == "council":
            point = ReflectionPoint.model_validate(update["reflection_points"][-1])
            votes = ", ".join(f"{v.archetype}={v.verdict}:{v.confidence:.2f}" for v in point.votes)
            print(f"[{point.index}] {point.segment.strip()!r}\n    {votes} -> {point.decision.decision}")

print("\n" + runtime.log.get(episode_id).final_text)
