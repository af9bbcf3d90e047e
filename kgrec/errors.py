"""User-fixable errors.

Every error a user can act on subclasses :class:`KgrecError`. The CLI prints its
message (no traceback) and exits with status 1. A message says what went wrong,
the value found, what was expected, and the next step.
"""


class KgrecError(Exception):
    """Base class for errors the user can fix."""


class InputFileError(KgrecError):
    """An input file is missing, unreadable, empty or in an unsupported format."""


class SchemaError(KgrecError):
    """An input table has a missing column, a wrong type or an invalid value."""


class ConfigError(KgrecError):
    """A config file or a ``--set`` override has an unknown key or a bad value."""


class GraphStoreUnavailable(KgrecError):
    """The Neo4j server cannot be reached, started or fetched."""


class GraphStoreError(KgrecError):
    """Neo4j answered, but a query failed."""


class SnapshotError(KgrecError):
    """A graph snapshot is missing, corrupt or from an incompatible version."""


class TrainingError(KgrecError):
    """Training cannot start or finish (too little data, bad device, ...)."""


class ModelNotFoundError(KgrecError):
    """A trained model directory is missing or incomplete."""


class UnknownUserError(KgrecError):
    """A user id is not in the graph or the model."""


class UnknownProductError(KgrecError):
    """A product id is not in the graph or the model."""
