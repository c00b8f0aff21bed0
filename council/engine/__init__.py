"""The engine: the graph, the council's vote, judges, the persona, reflection points, prompts and the runtime."""
