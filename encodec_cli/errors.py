"""One error hierarchy; the CLI turns `EcdcError` into a one-line message.

A message names what the caller can change: the API's fields (`weights`, `force`) in
`str(e)`, the command's options (`--weights`, `-f`) in `e.cli` where they differ.
"""
from __future__ import annotations

import typing as tp


class EcdcError(Exception):
    """Base class of every error ecdc reports to its user."""

    def __init__(self, message: str, cli: tp.Optional[str] = None):
        super().__init__(message)
        self.cli = cli or message   # the same, as the command line says it


class FormatError(EcdcError):
    """The input is not a readable .ecdc file."""


class NotEcdcError(FormatError):
    """The input does not begin as an .ecdc file does."""


class TruncatedError(FormatError):
    """The .ecdc file ends early."""


def with_salvage_hint(e: FormatError, does: str) -> FormatError:
    """`e` (a cut or damaged file) saying what salvage would do instead."""
    return type(e)(f"{e} (salvage=True {does})", cli=f"{e.cli} (--salvage {does})")


class CorruptError(FormatError):
    """A CRC or checksum does not match."""


class AudioError(EcdcError):
    """The audio input cannot be read or the output cannot be written."""


class WeightsError(EcdcError):
    """Model weights cannot be found, downloaded, loaded or do not match a file."""


class MismatchError(WeightsError):
    """The weights loaded are not those of the file or model at hand (named with its input)."""


class OptionError(EcdcError):
    """A combination of options that cannot work (bandwidth, existing output, ...)."""
