"""Archetypes, pools and personas as validated data, and the model backends they run on."""
