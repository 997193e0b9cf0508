class DataError(Exception):
    """A data file is missing, malformed or fails its checksum; the message says which and where."""
