"""The project's own error types: a problem the user can fix, told in one line."""


class CnnlabError(Exception):
    """Base class: the CLI prints the message on one line and exits with status 2."""


class ConfigError(CnnlabError):
    """A configuration value or flag is out of its allowed range."""


class DataError(CnnlabError):
    """A dataset file is missing, unreadable or malformed."""


class ModelFileError(CnnlabError):
    """A model file cannot be loaded safely or is not usable here."""


class ImageError(CnnlabError):
    """An image file cannot be read or turned into a model input."""
