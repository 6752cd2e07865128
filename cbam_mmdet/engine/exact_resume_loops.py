"""mmengine's train loops, restoring a resumed checkpoint's random generators where the
interrupted run stood. With :class:`~.rng_state.RNGStateHook`, ``num_workers=0`` and
deterministic settings, a killed and resumed run ends with the uninterrupted run's
weights: :class:`ExactResumeIterBasedTrainLoop` from any iteration checkpoint (restored
after the dataloader skipped the trained iterations), :class:`ExactResumeEpochBasedTrainLoop`
from end-of-epoch checkpoints (mmengine restarts an interrupted epoch; the loop warns).
With ``num_workers > 0`` the workers' generators mid-epoch are not saved.
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
    """mmengine's loop, restoring the generators after advancing the dataloader."""

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
