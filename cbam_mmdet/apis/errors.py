"""The errors the tools report as one message (no traceback), the entry point that does
it, and the command-line options the tools share."""
import gc
import os
import sys

from ..checkpoint import (CheckpointMismatchError, CorruptCheckpointError,
                          UnsafeCheckpointError, allow_unsafe_checkpoints)
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
    """Input the tools accept with a documented skip (e.g. boxes outside the image)."""


KNOWN_ERRORS = (InputError, UnsafeCheckpointError, CorruptCheckpointError,
                CheckpointMismatchError, UnknownPluginError)


def exit_on_known_errors(main, argv=None, prog=None):
    """Run ``main(argv)`` as a tool's entry point: a known error prints ``PROG: error:
    MESSAGE`` and exits with status 2. The result (a runner, in reference cycles) is
    collected before returning: a gloo group freed at interpreter exit can abort it."""
    try:
        main(argv)
    except KNOWN_ERRORS as e:
        prog = prog or sys.argv[0]
        print(f'{prog}: error: {e}', file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    gc.collect()


def parse_tool_args(parser, argv=None, launcher=True):
    """Add the shared options (``--cfg-options``, ``--unsafe-load-untrusted-checkpoints``;
    ``--launcher``, ``--local-rank`` when ``launcher``), parse ``argv`` and apply them."""
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--unsafe-load-untrusted-checkpoints', action='store_true',
                        help='UNSAFE: load checkpoints whose unpickling may run code')
    if launcher:
        parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                            default='none', help='job launcher')
        parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if launcher:
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    allow_unsafe_checkpoints(args.unsafe_load_untrusted_checkpoints)
    return args
