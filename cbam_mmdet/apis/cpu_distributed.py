"""Distributed training and testing on CPU (gloo), which mmengine 0.10.7 does not do.

Two places of mmengine assume a GPU per process under ``--launcher pytorch``:
``_init_dist_pytorch`` calls ``torch.cuda.set_device(LOCAL_RANK)``, and the runner
wraps the model in ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, which torch
refuses for a CPU module. On a machine without CUDA, :func:`prepare_cpu_distributed`
(called by ``tools/train.py`` and ``tools/test.py``) therefore

- initialises the process group itself, from the launcher's environment (``RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, as ``torch.distributed.run`` sets
  them) with ``env_cfg.dist_cfg`` (backend ``gloo``); mmengine then finds it
  initialised and skips its own initialisation;
- sets ``model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None)``
  (a ``device_ids`` in the config wins over the runner's default), keeping the
  runner's other defaults (``broadcast_buffers=False``, ``find_unused_parameters``).

Nothing of mmengine is patched. Usage::

    bash tools/dist_train.sh CONFIG 2 --cfg-options env_cfg.dist_cfg.backend=gloo
"""
import datetime
import os

import torch
import torch.distributed as torch_dist

from .errors import InputError


def prepare_cpu_distributed(cfg) -> bool:
    """Make a ``launcher='pytorch'`` config run on CPU processes. Returns True if it
    did something (no CUDA and a pytorch launcher), False otherwise."""
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    dist_cfg = dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        raise InputError(f"env_cfg.dist_cfg.backend is {backend!r}, which needs CUDA GPUs; "
                         f"this machine has none: pass --cfg-options "
                         f"env_cfg.dist_cfg.backend=gloo to train on CPU processes")
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise InputError(f'--launcher pytorch needs the environment variable {key} '
                             f'(start the tool with tools/dist_train.sh or '
                             f'python -m torch.distributed.run)')
    if not torch_dist.is_initialized():
        timeout = dist_cfg.pop('timeout', None)
        if timeout is not None:
            dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(backend='gloo', **dist_cfg)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True


def finish_distributed():
    """Wait for every process, then tear the process group down before the interpreter
    exits (a gloo group left running aborts the process at exit). A DDP model still
    holds the group: the tools' entry point (``exit_on_known_errors``) frees the runner
    before they exit, for the same reason."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
