"""Errors that are the user's to fix, not the program's.

The contract with the command line: `minadapt.cli` catches `MinadaptError`, prints its message as
one clean line (or a few), and exits with status 1, without a traceback. So the message of a
`MinadaptError` must stand on its own: say which file or setting is at fault, what was expected,
what was found, and how to fix it. Anything else that escapes (ValueError, KeyError, ...) is a bug
in minadapt or in code calling it, and keeps its traceback.

Each area adds its own subclass here, so callers can catch one kind of trouble on its own.
"""


class MinadaptError(Exception):
    """Base for user-facing errors: the CLI prints the message alone, without a traceback."""


class DataError(MinadaptError):
    """A data set is missing, unreadable or malformed (names the file and, where it can, the line)."""


class ConfigError(MinadaptError):
    """A setting is wrong: a model config (config.json) that is missing, unreadable or lacks a
    required field, a training setting out of range (TrainConfig names the field, the CLI the
    option), an --out folder that cannot be written or is in use by another run, or an environment
    variable minadapt reads (MINADAPT_THREADS) that is malformed."""


class WeightsError(MinadaptError):
    """A checkpoint or adapter file is missing, truncated, has a wrong key or shape, holds a NaN or
    an Inf, or does not fit the task it is asked to run on."""


class TrainingDiverged(MinadaptError):
    """The training loss or gradient norm became NaN or Inf; the last good checkpoint is kept."""


class DeviceError(MinadaptError, RuntimeError):
    """A GPU was asked for but CuPy is missing or finds no CUDA device."""


class ServeError(MinadaptError):
    """`minadapt serve` cannot listen where it was asked: the port is in use, the address is not
    this machine's, or a port below 1024 needs privileges."""


class StorageError(MinadaptError):
    """A file could not be saved: the disk is full, a quota is reached, the filesystem is
    read-only, or writing there is not allowed. The message names the file and the cause; the
    previous version of the file is kept. `safetensors`' own SafetensorError is not an OSError, so
    io.weights turns it into this too."""
