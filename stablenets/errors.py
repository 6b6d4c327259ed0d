"""The one exception the entry points turn into a one-paragraph message and a non-zero exit."""


class ConfigError(ValueError):
    """Bad user input: an invalid config value, a missing data set with no way to get it, ..."""
