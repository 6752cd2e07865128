"""mmengine's train loops, restoring the random generators of a resumed checkpoint at
the point where the interrupted run stood.

With :class:`~cbam_mmdet.engine.RNGStateHook`, ``num_workers=0`` and deterministic
settings, a run killed at any checkpoint and resumed ends with the same weights as an
uninterrupted run:

- :class:`ExactResumeIterBasedTrainLoop`: from any iteration checkpoint. mmengine's
  loop advances the dataloader past the iterations already trained (replaying the
  sampler, the batch sampler's buckets and the data pipeline); the generators are
  restored after that skip, just before the first new iteration.
- :class:`ExactResumeEpochBasedTrainLoop`: from checkpoints written at the end of an
  epoch. mmengine restarts an interrupted epoch from its first batch, so a checkpoint
  written inside an epoch resumes as mmengine does (not exact; the loop warns).

With ``num_workers > 0`` the pipeline's random numbers are drawn in the worker
processes, seeded per epoch by mmengine's ``worker_init_fn``; their state mid-epoch is
not saved.
"""
import logging

from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmdet.registry import LOOPS

from .rng_state import RNGStateHook


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


@LOOPS.register_module()
class ExactResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """:class:`mmengine.runner.IterBasedTrainLoop` that, when resumed, restores the
    checkpoint's random generators after advancing the dataloader (see the module)."""

    def run(self):
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            print_log(f'Advance dataloader {self._iter} steps to skip data that has '
                      'already been trained', logger='current', level=logging.WARNING)
            for _ in range(self._iter):
                next(self.dataloader_iterator)
            restore_resumed_rng_state(self.runner)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()

            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)

            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()

        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model


@LOOPS.register_module()
class ExactResumeEpochBasedTrainLoop(EpochBasedTrainLoop):
    """:class:`mmengine.runner.EpochBasedTrainLoop` that, when resumed from the end of
    an epoch, restores the checkpoint's random generators (see the module)."""

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
