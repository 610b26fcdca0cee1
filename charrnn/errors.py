"""The project's exceptions. The CLI (``charrnn.cli.errors``) turns each into one line on stderr."""


class CharRNNError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class CorpusError(CharRNNError):
    """A text file or corpus name that cannot be used for training."""


class VocabError(CharRNNError):
    """Characters that a vocabulary does not cover."""


class CheckpointError(CharRNNError):
    """A checkpoint that is missing, damaged, foreign or unsafe."""


class ConfigError(CharRNNError):
    """Option values that do not make sense together."""


class InvalidText(ConfigError):
    """Text from outside (an argument, a file name, a typed line, an HTTP body) that is not
    valid Unicode: bytes that are not UTF-8, or a lone surrogate."""


class DeviceError(CharRNNError):
    """A device or precision that this machine cannot provide."""


class InsufficientMemory(CharRNNError):
    """A model or batch bigger than the memory of the device it would run on."""


class TrainingDiverged(CharRNNError):
    """The loss became NaN or infinite; no checkpoint was written for that step."""


class DownloadError(CharRNNError):
    """A corpus could not be fetched or did not match its checksum."""


class ExportError(CharRNNError):
    """A model that cannot be written in the asked format, or a format whose packages are missing."""
