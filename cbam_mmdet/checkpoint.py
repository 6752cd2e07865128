"""Safe checkpoint loading and atomic checkpoint writing for mmengine.

Importing :mod:`cbam_mmdet` replaces mmengine's local-file loader (which fails on its own
checkpoints under torch >= 2.6) with :func:`load_checkpoint_file`: torch's weights-only
unpickler with an allowlist of mmengine's types. Anything else could run code and is
refused (:class:`UnsafeCheckpointError`) unless trusted (:func:`allow_unsafe_checkpoints`,
``CBAM_MMDET_UNSAFE_LOAD_CHECKPOINTS=1``). Local files are also written atomically.
"""
import contextlib
import os
import os.path as osp
import pickle
import re
import tempfile

import numpy as np
import torch
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

UNSAFE_ENV = 'CBAM_MMDET_UNSAFE_LOAD_CHECKPOINTS'
_unsafe_allowed = False


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs types outside the allowlist to unpickle."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is not a readable PyTorch checkpoint (truncated, corrupt)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the model (:mod:`cbam_mmdet.engine`)."""


def _numpy_globals():
    reconstruct = getattr(getattr(np, '_core', np.core).multiarray, '_reconstruct')
    scalar = getattr(np, '_core', np.core).multiarray.scalar
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    return [reconstruct, scalar, np.ndarray, np.dtype] + dtypes


def _history_buffer_getattr(obj, name):
    """``getattr`` while unpickling, for HistoryBuffer's statistics methods only (a general
    ``getattr`` would let a pickle reach any attribute, and from there code)."""
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) is not allowed')


def safe_globals():
    """The types (besides torch's own) an mmengine checkpoint may hold."""
    getattr_standins = [(_history_buffer_getattr, 'builtins.getattr'),
                        (_history_buffer_getattr, '__builtin__.getattr')]
    return [HistoryBuffer] + _numpy_globals() + getattr_standins


def allow_unsafe_checkpoints(allow: bool = True):
    """Trust checkpoints whose unpickling may run code (UNSAFE: only for your own files)."""
    global _unsafe_allowed
    _unsafe_allowed = bool(allow)


def unsafe_allowed() -> bool:
    return _unsafe_allowed or os.environ.get(UNSAFE_ENV, '') not in ('', '0')


def load_checkpoint_file(filename, map_location='cpu'):
    """``torch.load`` with weights_only=True and the allowlist of :func:`safe_globals`."""
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename} does not exist')
    if unsafe_allowed():
        return torch.load(filename, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError,
            IndexError) as e:
        if isinstance(e, pickle.UnpicklingError) and 'Weights only load failed' in str(e):
            raise UnsafeCheckpointError(
                f'refused to load checkpoint {filename}: unpickling it needs '
                f'{_refused_global(e)}, outside the allowlist of tensors, numpy arrays and '
                f'mmengine types, so it could run code. Nothing in it was executed. If you '
                f'trust this file, pass --unsafe-load-untrusted-checkpoints to the tool or '
                f'set {UNSAFE_ENV}=1.') from None
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        raise CorruptCheckpointError(
            f'checkpoint file {filename} is not a readable PyTorch checkpoint (truncated '
            f'or corrupt?): {lines[0][:300] if lines else type(e).__name__}') from None


def _refused_global(error) -> str:
    """The object the weights-only unpickler refused, from torch's message."""
    text = str(error)
    for pattern in (r'GLOBAL ([\w.]+)',
                    r'Unsupported operand (\d+)',
                    r'Trying to call reduce for unrecognized function (.+?) which'):
        match = re.search(pattern, text)
        if match:
            return f"'{match.group(1)}'"
    lines = [ln.split('WeightsUnpickler error:')[-1].strip() for ln in text.splitlines()[1:]]
    lines = [ln for ln in lines if ln and not ln.startswith(('Please file an issue',
                                                             'Check the documentation'))]
    return f'an object it refused ({lines[0][:200]})' if lines else 'objects it refused'


@CheckpointLoader.register_scheme(prefixes='', force=True)
def _load_from_local_safely(filename, map_location):
    return load_checkpoint_file(filename, map_location)


def latest_checkpoint(work_dir):
    """The checkpoint ``--resume`` continues from: the one ``last_checkpoint`` names if it
    exists (a kill can leave that file empty), else the newest ``iter_*``/``epoch_*.pth``."""
    pointer = osp.join(str(work_dir), 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    found = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        match = re.fullmatch(r'(iter|epoch)_(\d+)\.pth', name)
        if match:
            path = osp.join(str(work_dir), name)
            found.append((osp.getmtime(path), int(match.group(2)), path))
    return max(found)[2] if found else None


def write_atomically(data: bytes, filepath):
    """Write ``data`` to ``filepath`` through a temporary file and a rename."""
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(filepath) + '.', suffix='.tmp',
                               dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing every file atomically."""

    def put(self, obj: bytes, filepath) -> None:
        write_atomically(obj, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        write_atomically(obj.encode(encoding), filepath)


register_backend('local', AtomicLocalBackend, force=True, prefixes='')
# Backends created before this import keep their class: drop cached plain local ones.
from mmengine.fileio import io as _io  # noqa: E402

for _key, _backend in list(_io.backend_instances.items()):
    if type(_backend) is LocalBackend:
        del _io.backend_instances[_key]
