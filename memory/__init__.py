"""The episode log (SQL, the source of truth) and, later, vector memory and recall."""
