"""Typed errors whose messages say what went wrong and what to do about it."""


class CouncilError(Exception):
    """Base class: a configuration, input or backend problem the user can fix.

    The CLI prints ``str(error)`` as one line and exits with code 1.
    """

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what = what
        self.fix = fix


class DefinitionError(CouncilError):
    """A YAML archetype, pool or persona definition is missing or invalid."""


class ModelError(CouncilError):
    """A model file or server cannot be found, loaded or reached."""


class ContextOverflowError(CouncilError):
    """A prompt does not fit the model's context window."""


class StorageError(CouncilError):
    """The episode log cannot be opened, migrated or written."""


class NotFoundError(CouncilError):
    """A named thing (episode, pool, archetype) does not exist."""


class NothingToTrainError(CouncilError):
    """A training run found no new preference pairs."""
