"""The one error type a user sees: the CLI prints its message on one line and exits with code 2."""


class SDTError(Exception):
    """Bad input or configuration. The message says what is wrong and, where it can, what to do."""
