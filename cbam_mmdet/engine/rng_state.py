"""Save every random number generator of a run in its checkpoints, for exact resume.

A training run draws from four generators: Python's ``random`` and NumPy's global
generator (the data pipeline: RandomFlip, RandomResize, ...), torch's CPU generator
(mmdet's RPN/RoI ``RandomSampler`` uses ``torch.randperm``, dropout, the DataLoader's
base seed) and, on GPUs, torch's CUDA generators. mmengine's checkpoints keep the seed
only, so a resumed run re-seeds and draws different numbers than the interrupted run
would have.

:class:`RNGStateHook` stores the states of all of them in every checkpoint
(``checkpoint['rng_state']``, tensors and plain numbers, readable by the weights-only
loader) and keeps them after a resume until the train loop restores them at the right
moment: after mmengine has advanced the dataloader past the iterations already trained
(that skip runs the data pipeline and draws numbers), just before the first new
iteration (:mod:`cbam_mmdet.engine.exact_resume_loops`).

Validation draws numbers too (building the val DataLoader's iterator draws from
torch's generator). The hook saves all states before validation and restores them
after it, so the training stream does not depend on whether, or how often, validation
ran: a run resumed from the checkpoint written just before a validation continues with
the same numbers as the run that validated.

The states are per process. Only rank 0 writes checkpoints, so in a distributed run the
hook saves and restores nothing (it warns once).
"""
import logging
import random

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmdet.registry import HOOKS

RNG_STATE_KEY = 'rng_state'


def get_rng_state() -> dict:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators,
    as tensors and plain Python numbers (what the weights-only loader accepts)."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = dict(
        python=dict(version=version, state=torch.tensor(py_state, dtype=torch.int64),
                    gauss=gauss),
        numpy=dict(name=str(name), keys=torch.from_numpy(keys.astype(np.int64)),
                   pos=int(pos), has_gauss=int(has_gauss),
                   cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators saved by :func:`get_rng_state`."""
    py = state['python']
    random.setstate((py['version'], tuple(int(v) for v in py['state'].tolist()),
                     py['gauss']))
    npy = state['numpy']
    np.random.set_state((npy['name'], npy['keys'].numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda_states = state['cuda']
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            print_log(f'the checkpoint holds the CUDA generator states of '
                      f'{len(cuda_states)} devices, this machine has '
                      f'{torch.cuda.device_count()}: CUDA generators not restored',
                      logger='current', level=logging.WARNING)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save every generator's state in checkpoints; keep validation out of the
    training stream; hand the resumed states to the train loop.

    The train loops :class:`~cbam_mmdet.engine.ExactResumeIterBasedTrainLoop` and
    :class:`~cbam_mmdet.engine.ExactResumeEpochBasedTrainLoop` call
    :meth:`restore_resumed_state`. ``tools/train.py`` adds both (see
    :func:`cbam_mmdet.apis.build_train_config`).
    """

    priority = 'VERY_LOW'

    def __init__(self):
        self.resumed_state = None
        self._state_before_val = None
        self._warned_distributed = False

    def _single_process(self) -> bool:
        if get_world_size() == 1:
            return True
        if not self._warned_distributed:
            print_log('RNGStateHook: distributed run, the generators of each rank are '
                      'neither saved nor restored (only rank 0 writes checkpoints)',
                      logger='current', level=logging.WARNING)
            self._warned_distributed = True
        return False

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._single_process():
            checkpoint[RNG_STATE_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # The loop restores this only when it resumes (iteration > 0).
        self.resumed_state = checkpoint.get(RNG_STATE_KEY)

    def restore_resumed_state(self, runner) -> bool:
        """Restore the states read from the resumed checkpoint (once). Returns whether
        there was a state to restore."""
        state, self.resumed_state = self.resumed_state, None
        if state is None or not self._single_process():
            return False
        set_rng_state(state)
        runner.logger.info('restored the random generators of the resumed checkpoint')
        return True

    def before_val(self, runner) -> None:
        self._state_before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._state_before_val is not None:
            set_rng_state(self._state_before_val)
            self._state_before_val = None
