"""The errors the tools report as one message (no traceback), and the helper that
does it. Package functions raise them, so tests and callers can catch them."""
import gc
import sys

from ..checkpoint import (CheckpointMismatchError, CorruptCheckpointError,
                          UnsafeCheckpointError)
from ..engine.plugin_check import UnknownPluginError


class InputError(Exception):
    """Bad input the user can fix: a dataset file, a config field."""


class DatasetFileError(InputError, FileNotFoundError):
    """A file or folder a dataset needs is missing."""


class MissingCheckpointError(InputError, FileNotFoundError):
    """A checkpoint file given on the command line does not exist."""


class AnnotationFileError(InputError, ValueError):
    """An annotation file cannot be parsed or lacks a field."""


class ImageFileError(InputError, ValueError):
    """Image files listed by the annotations are missing or not readable images."""


class NumClassesMismatchError(InputError, ValueError):
    """The model's num_classes does not match the dataset's classes."""


class DatasetWarning(UserWarning):
    """Input the tools accept with a documented skip (boxes outside the image, images
    without boxes)."""


KNOWN_ERRORS = (InputError, UnsafeCheckpointError, CorruptCheckpointError,
                CheckpointMismatchError, UnknownPluginError)


def exit_on_known_errors(main, argv=None, prog=None):
    """Run ``main(argv)`` as a tool's entry point; a known error prints ``PROG: error:
    MESSAGE`` on stderr and exits with status 2, without a traceback. The result is
    dropped and garbage-collected before this returns: a runner lives in reference
    cycles, and a DDP model's gloo process group freed during the interpreter's exit
    can abort the process."""
    try:
        main(argv)
    except KNOWN_ERRORS as e:
        prog = prog or sys.argv[0]
        print(f'{prog}: error: {e}', file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    gc.collect()
