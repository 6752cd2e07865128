"""``ReplicaCheckHook``: whether the replicas of a data-parallel training stay one model.

Add it to a config (or ``--cfg-options``) of a distributed run::

    custom_hooks = [dict(type='ReplicaCheckHook')]

- Every rank reports the attention path it runs (Triton kernels replayed from C++, CPU
  kernels or PyTorch; ``cbam_mmdet.ops.extensions.describe``) and how many CBAM/SE calls
  of the training were replayed from C++ (a signature's first call runs in Python).
- At the optimizer step of every ``interval``-th and of the last iteration, the largest
  difference between each rank's CBAM/SE gradients and rank 0's: 0 when the all-reduce
  reached them.
- After training, the largest difference between each rank's parameters and rank 0's.

Rank 0 logs the results and writes them to ``<work_dir>/replica_check.json``.
"""
import json
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..models import CBAM, SE
from ..ops import extensions, triton_programs


def _max_diff_to_rank0(tensors):
    """max |t - t on rank 0| over ``tensors`` (the same list, in order, on every rank)."""
    worst = torch.zeros((), dtype=torch.float64)
    for t in tensors:
        ref = t.detach().clone()
        torch_dist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (t.detach() - ref).abs().max().double().cpu())
    worst = worst.to(tensors[0].device) if tensors else worst
    torch_dist.all_reduce(worst, op=torch_dist.ReduceOp.MAX)
    return float(worst)


@HOOKS.register_module()
class ReplicaCheckHook(Hook):
    """See the module docstring. ``interval``: also check the gradients every this many
    iterations (default: only at the last one)."""

    priority = 'VERY_LOW'

    def __init__(self, interval=None):
        self.interval = interval
        self.results = dict(grad_checks=[])
        self._check_grads = False

    def _model(self, runner):
        return getattr(runner.model, 'module', runner.model)

    def _plugin_params(self, runner):
        return [p for m in self._model(runner).modules() if isinstance(m, (CBAM, SE))
                for p in m.parameters() if p.requires_grad]

    def before_train(self, runner):
        if not (torch_dist.is_available() and torch_dist.is_initialized()):
            runner.logger.warning('ReplicaCheckHook: not a distributed run, nothing to check')
            return
        device = next(self._model(runner).parameters()).device
        self._replayed = triton_programs.replayed_calls()
        self.results['paths'] = [f'rank {runner.rank} ({device}): {extensions.describe(device)}']
        runner.optim_wrapper.optimizer.register_step_pre_hook(
            lambda optimizer, args, kwargs: self._grad_check(runner))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        last = runner.iter + 1 == runner.max_iters
        self._check_grads = last or bool(self.interval and (runner.iter + 1) % self.interval == 0)

    def _grad_check(self, runner):
        if not self._check_grads:
            return
        params = [p for p in self._plugin_params(runner) if p.grad is not None]
        self.results['grad_checks'].append(dict(
            iter=runner.iter + 1, plugin_params_with_grad=len(params),
            max_abs_grad=max((float(p.grad.abs().max()) for p in params), default=0.0),
            max_diff_to_rank0=_max_diff_to_rank0([p.grad for p in params])))

    def after_train(self, runner):
        if 'paths' not in self.results:
            return
        model = self._model(runner)
        self.results['param_max_diff_to_rank0'] = _max_diff_to_rank0(
            [p for p in model.parameters()])
        gathered = [None] * torch_dist.get_world_size()
        torch_dist.all_gather_object(gathered, dict(
            path=self.results['paths'][0],
            replayed=triton_programs.replayed_calls() - self._replayed))
        self.results['paths'] = [f"{g['path']}; CBAM/SE calls replayed from C++ in training: "
                                 f"{g['replayed']}" for g in gathered]
        self.results['world_size'] = len(gathered)
        for line in self.results['paths']:
            runner.logger.info(f'ReplicaCheckHook: {line}')
        runner.logger.info(
            f"ReplicaCheckHook: parameters, max |rank r - rank 0| = "
            f"{self.results['param_max_diff_to_rank0']:.3g}; plugin gradients: "
            + '; '.join(f"iter {c['iter']}: max |rank r - rank 0| = {c['max_diff_to_rank0']:.3g}"
                        f" (max |grad| {c['max_abs_grad']:.3g}, "
                        f"{c['plugin_params_with_grad']} tensors)"
                        for c in self.results['grad_checks']))
        if runner.rank == 0:
            with open(osp.join(runner.work_dir, 'replica_check.json'), 'w') as f:
                json.dump(self.results, f, indent=1)
