"""ecdc: a command-line neural audio compressor built on Meta's EnCodec models."""

__version__ = "0.2.0"
