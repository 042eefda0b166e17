"""Exceptions raised by daqload. Every message names the file concerned."""


class DaqloadError(Exception):
    """Base class of every error daqload raises on purpose."""


class RunNotFoundError(DaqloadError, FileNotFoundError):
    """A path, directory or pattern that names no run file."""


class RunFormatError(DaqloadError, ValueError):
    """A file that is not a daq1 run, has an unsupported format_version, or is damaged."""


class MissingFieldError(DaqloadError, LookupError):
    """A field that was asked for is not in the run (e.g. 'calibrated' before calibration exists)."""

    def __str__(self):  # LookupError/KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DamagedChunkError(RunFormatError):
    """A stored chunk that cannot be decoded (damaged compressed data, a wrong
    stored size, a file that ends inside it). The message names the file, the
    dataset, the chunk and its rows."""
