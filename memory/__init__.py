"""Memory: the episode log (the source of truth), the task queue and versions beside it, and vector memory."""
