"""The one error type of bad input data."""


class DataError(ValueError):
    """Bad input data; the message names the file/key and what was expected."""
