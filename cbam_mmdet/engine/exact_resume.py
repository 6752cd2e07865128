"""Exact resume: every random number generator of a run saved in its checkpoints, and
restored where the interrupted run stood.

mmengine's checkpoints keep the seed only. :class:`RNGStateHook` stores the states of
Python's, NumPy's and torch's (CPU, CUDA) generators in every checkpoint and restores them
after validation; the train loops below restore a resumed checkpoint's states once the
dataloader has skipped the trained iterations (the epoch loop: from end-of-epoch
checkpoints only). With ``num_workers=0`` and deterministic settings a killed and resumed
run ends with the uninterrupted run's weights. Distributed runs and dataloader workers'
generators are not covered (a warning says so).
"""
import logging
import random

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmdet.registry import HOOKS, LOOPS

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
    """Save every generator's state in checkpoints; keep validation out of the training
    stream; hand the resumed states to the train loops (see the module)."""

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
        """Restore the resumed checkpoint's states (once); whether there were any."""
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


def restore_resumed_rng_state(runner) -> bool:
    """Let the run's :class:`RNGStateHook` restore the resumed checkpoint's generators."""
    hooks = [h for h in runner.hooks if isinstance(h, RNGStateHook)]
    if not hooks:
        print_log('resumed without RNGStateHook: the random generators are re-seeded, '
                  'not restored, so the resumed run draws other numbers than the '
                  'interrupted one', logger='current', level=logging.WARNING)
        return False
    restored = hooks[0].restore_resumed_state(runner)
    if not restored:
        print_log('the resumed checkpoint holds no random generator states (written '
                  'without RNGStateHook?): the resumed run draws other numbers than the '
                  'interrupted one', logger='current', level=logging.WARNING)
    return restored


class _RestoreAfterSkip:
    """The train loop's dataloader iterator, restoring the resumed generators just before
    the first batch after the ``skip`` batches mmengine advances past on resume."""

    def __init__(self, iterator, skip, runner):
        self.iterator, self.skip, self.runner = iterator, skip, runner

    def __next__(self):
        if self.skip == 0:
            restore_resumed_rng_state(self.runner)
        self.skip -= 1
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)


@LOOPS.register_module()
class ExactResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's loop, restoring the generators after advancing the dataloader."""

    def run(self):
        if self._iter > 0:
            self.dataloader_iterator = _RestoreAfterSkip(self.dataloader_iterator,
                                                         self._iter, self.runner)
        return super().run()


@LOOPS.register_module()
class ExactResumeEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's loop, restoring the generators when resumed at the end of an epoch."""

    def run(self):
        if self._iter > 0:
            if self._iter == self._epoch * len(self.dataloader):
                restore_resumed_rng_state(self.runner)
            else:
                print_log(f'resumed at iteration {self._iter}, inside epoch '
                          f'{self._epoch + 1}: mmengine restarts that epoch from its first '
                          'batch, the random generators are not restored; the run is not '
                          'exactly the uninterrupted one (resume from an epoch checkpoint '
                          'for that)', logger='current', level=logging.WARNING)
        return super().run()
