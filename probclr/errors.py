"""User-facing errors: the CLI turns these into one line on stderr and exit code 2."""


class ProbclrError(ValueError):
    """A problem with the user's input (a value, a path, a file); the message names it."""


class ConfigError(ProbclrError):
    """An unknown, mistyped or impossible configuration value; the message names the key."""


class DataError(ProbclrError):
    """A missing, empty or unreadable dataset; the message names the path or file."""
