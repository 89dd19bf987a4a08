"""One error hierarchy; the CLI turns `EcdcError` into a one-line message."""


class EcdcError(Exception):
    """Base class of every error ecdc reports to its user."""


class FormatError(EcdcError):
    """The input is not a readable .ecdc file."""


class TruncatedError(FormatError):
    """The .ecdc file ends early."""


class CorruptError(FormatError):
    """A CRC or checksum does not match."""


class AudioError(EcdcError):
    """The audio input cannot be read or the output cannot be written."""


class WeightsError(EcdcError):
    """Model weights cannot be found, downloaded, loaded or do not match a file."""


class OptionError(EcdcError):
    """A combination of options that cannot work (bandwidth, existing output, ...)."""
