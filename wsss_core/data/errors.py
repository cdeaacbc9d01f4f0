"""The one error type of bad data files (missing ones raise FileNotFoundError)."""


class DataError(ValueError):
    """A data file that cannot be used; the message is one line naming the file."""
