"""Error types users see. Each message is one readable line naming the key at fault."""


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any training starts."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""
