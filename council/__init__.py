"""archetype-council: a persona that pauses to reflect, and a council of archetypes that votes."""

__version__ = "0.1.0"
