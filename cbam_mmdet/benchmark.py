"""Speed of the attention plugins: baseline vs SE vs CBAM, in one process.

Every variant is built from a config, as one or more models that differ only in the seed
of their random weights (:func:`default_seeds`), runs on the same synthetic batch, and
all models take turns (interleaved, in an order drawn anew each round:
:func:`round_order`) inside each round, after warm-up rounds, so that drifts of the
machine (clocks, other processes) hit them alike. A variant's time in a round is the mean
step time of its models; its time is the median of that over the rounds, and its ratio
is the median over the rounds of (its time / the baseline's time in the same round),
with a 95% confidence interval of that median (:func:`median_interval`: order
statistics, no assumption on how the ratios are distributed) and the spread of those
ratios.

Variants: ``baseline`` (mmdet's ResNet), ``se``, ``cbam`` (the configs as shipped:
``FusedTailResNet``, whose blocks run their residual addition and ReLU inside the plugin,
with the plugins' default ``implementation='auto'``) and, for each plugin, ``-ref``
(``implementation='reference'``), ``-eager`` (the fast path without CUDA graphs) and
``-graph`` (the fast path replayed from CUDA graphs for CUDA inference). ``se-mmdet`` and
``cbam-mmdet`` (with the same suffixes) are ``se`` and ``cbam`` in mmdet's own ResNet
(:func:`variant_config`): the plugin inside mmdet's Bottleneck, which adds the residual
and applies the ReLU after it, as a config that adds ``plugins=`` to mmdet's ResNet
builds it. Runs before this split named the configs' variants ``se-tail`` and
``cbam-tail``, and ``se`` and ``cbam`` were what ``-mmdet`` is now; each result records
its ``backbone`` type, and :func:`pool_runs` does not pool a variant whose backbone
differs between runs.

Detectors propose the same boxes in every model (:func:`fix_proposals`, the default):
the RPN's output layers and the RoI head's classifier start at zero and the
optimiser's learning rate is 0, so that the work after the backbone (proposals, NMS,
assignment, RoIAlign over the same boxes) is the same for every model and variant, and
a ratio holds the plugins' cost, not what random weights make the heads do.
"""
import contextlib
import copy
import gc
import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field

import torch

DEFAULT_CONFIGS = {
    'baseline': 'configs/faster_rcnn_r50_coco.py',
    'se': 'configs/faster_rcnn_r50_se_coco.py',
    'cbam': 'configs/faster_rcnn_r50_cbam_coco.py',
}
# a '<plugin><MMDET>' variant: <plugin>'s config in mmdet's own ResNet
MMDET = '-mmdet'
# variant suffix -> the plugins' ``implementation``
SUFFIXES = {'': 'auto', '-ref': 'reference', '-eager': 'eager', '-graph': 'graph'}
VARIANTS = ('baseline',) + tuple(p + s for p in ('se', 'cbam', 'se' + MMDET, 'cbam' + MMDET)
                                  for s in SUFFIXES)
DEFAULT_VARIANTS = ('baseline', 'se-ref', 'se-eager', 'se-graph', 'cbam-ref',
                    'cbam-eager', 'cbam-graph')
MODES = ('train', 'infer')


def split_variant(name):
    """(config key, plugin implementation) of a variant name."""
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if suffix and name.endswith(suffix):
            return name[:-len(suffix)], SUFFIXES[suffix]
    return name, 'auto'


def variant_config(name, configs=None):
    """The mmengine Config of a variant: ``<plugin><suffix>`` is ``<plugin>`` with every
    plugin's ``implementation`` set by the suffix (:data:`SUFFIXES`);
    ``<plugin>-mmdet<suffix>`` is that with the backbone's ``type`` set to mmdet's
    ``ResNet`` (``PluginResNet`` for ResNet-18/34, whose BasicBlock in mmdet takes no
    plugins) where it is ``FusedTailResNet``; ``init_cfg`` is dropped (no download)."""
    from mmengine.config import Config
    if name not in VARIANTS:
        raise ValueError(f'variant must be one of {list(VARIANTS)}, got {name!r}')
    configs = {**DEFAULT_CONFIGS, **(configs or {})}
    base, implementation = split_variant(name)
    in_mmdet = base.endswith(MMDET)
    if in_mmdet:
        base = base[:-len(MMDET)]
    cfg = Config.fromfile(configs[base])
    backbone = cfg.model.backbone
    backbone.init_cfg = None
    if in_mmdet and backbone.type == 'FusedTailResNet':
        backbone.type = 'ResNet' if backbone.get('depth', 50) >= 50 else 'PluginResNet'
    if base != 'baseline' and not backbone.get('plugins'):
        raise ValueError(f'config {configs[base]} of variant {name!r} has no '
                         'model.backbone.plugins')
    for plugin in backbone.get('plugins') or []:
        plugin.cfg.implementation = implementation
    return cfg


def build_model(cfg, backbone_only):
    import cbam_mmdet  # noqa: F401  (registers CBAM and SE)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    model = MODELS.build(copy.deepcopy(cfg.model.backbone if backbone_only else cfg.model))
    return model


# the layers whose outputs decide a two-stage detector's proposals and detections
OUTPUT_LAYERS = ('rpn_head.rpn_cls', 'rpn_head.rpn_reg', 'roi_head.bbox_head.fc_cls')


def fix_proposals(model):
    """Zero the weights and biases of the detector's :data:`OUTPUT_LAYERS`, so that it
    proposes the same boxes whatever its other weights: every anchor scores alike and
    regresses to itself, and every RoI gets the same class scores (all below the test
    score threshold, so no model keeps a detection). The box regression layer keeps its
    weights, through which the training loss still sends gradients into the backbone.
    Kept through training steps with a learning rate of 0 (the optimiser still runs its
    full update).

    With random output layers each model proposes its own boxes, and the heads' work
    follows: on an H200 (Faster R-CNN R50-FPN training steps, batch 2, 800x1216)
    baselines built from other seeds took 1.015-1.035 x the seed-0 baseline's time,
    data-dependent work that no plugin causes. Raises ValueError for a model without
    these layers."""
    missing = [name for name in OUTPUT_LAYERS
               if not isinstance(_submodule(model, name), (torch.nn.Conv2d, torch.nn.Linear))]
    if missing:
        raise ValueError(f'fixed proposals need a two-stage detector with the layers '
                         f'{list(OUTPUT_LAYERS)}; {type(model).__name__} lacks {missing} '
                         '(time it with random proposals instead: '
                         'random_proposals=True, --random-proposals)')
    with torch.no_grad():
        for name in OUTPUT_LAYERS:
            layer = _submodule(model, name)
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()


def _submodule(model, name):
    for part in name.split('.'):
        model = getattr(model, part, None)
    return model


def synthetic_batch(batch_size, shape, device, num_boxes=8, seed=0):
    """Normalised images (B, 3, H, W) and DetDataSamples with random boxes and labels."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    images = torch.randn((batch_size, 3, h, w), generator=g)
    samples = []
    for _ in range(batch_size):
        xy = torch.rand((num_boxes, 2), generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = (torch.rand((num_boxes, 2), generator=g) * 0.25 + 0.05) * torch.tensor([w, h])
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
            batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat((xy, xy + wh), dim=1).to(device),
            labels=torch.randint(0, 80, (num_boxes,), generator=g).to(device))
        samples.append(sample)
    return images.to(device), samples


@dataclass
class Runner:
    """One model of a variant: the model, its optimiser and step functions."""
    name: str
    model: torch.nn.Module
    backbone_only: bool
    amp: bool
    device: torch.device
    lr: float = 1e-4  # 0 keeps fixed proposals (fix_proposals)
    optimizer: torch.optim.Optimizer = None
    scaler: object = None
    plugin_seconds: float = 0.0  # host time inside the plugins' forward (plugin_hooks)
    _hooks: list = field(default_factory=list)

    def __post_init__(self):
        self.optimizer = torch.optim.SGD(
            [p for p in self.model.parameters() if p.requires_grad], lr=self.lr,
            momentum=0.9)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

    def plugin_hooks(self, enabled):
        """With ``enabled``, accumulate into ``plugin_seconds`` the wall time spent in the
        forward of every CBAM and SE module (forward hooks); else remove the hooks. On
        CUDA this is host time: kernels run asynchronously. The hooks slow a model's
        forward down beyond their own time (measured on CPU: SE backbone 1.036-1.044x the
        baseline with them, 1.026-1.032x without), so timed steps run without them."""
        from .models import CBAM, SE
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if not enabled:
            return
        starts = {}

        def start(module, args):
            starts[id(module)] = time.perf_counter()

        def stop(module, args, output):
            self.plugin_seconds += time.perf_counter() - starts.pop(id(module))

        for module in self.model.modules():
            if isinstance(module, (CBAM, SE)):
                self._hooks.append(module.register_forward_pre_hook(start))
                self._hooks.append(module.register_forward_hook(stop))

    def _autocast(self):
        dtype = torch.float16 if self.device.type == 'cuda' else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp)

    def set_mode(self, mode):
        """``model.train()`` for ``'train'``, ``model.eval()`` for ``'infer'``: once per
        mode, outside the timed steps, as mmengine's loops do (once per epoch or run).
        Inside every step it would charge each variant a walk over its modules (measured
        on CPU: 0.66 ms baseline, 0.94 ms CBAM for eval(), 0.96 / 1.51 ms for train())."""
        self.model.train(mode == 'train')

    def train_step(self, images, samples, mark=None):
        """One training step; ``mark(label)``, where given, is called as the loss
        returns, as ``backward()`` returns and after the optimiser's step."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            if self.backbone_only:
                loss = sum(o.float().mean() for o in self.model(images))
            else:
                losses = self.model(images, samples, mode='loss')
                loss, _ = self.model.parse_losses(losses)
        if mark is not None:
            mark('loss')
        self.scaler.scale(loss).backward()
        if mark is not None:
            mark('backward')
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if mark is not None:
            mark('optimiser')

    def infer_step(self, images, samples):
        with torch.no_grad(), self._autocast():
            if self.backbone_only:
                self.model(images)
            else:
                self.model(images, samples, mode='predict')


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(step, iters, device, collect_outside=False):
    """Mean seconds per call of ``step`` over ``iters`` calls. ``collect_outside``: Python's
    cyclic garbage collector is paused while the calls are timed and collects once
    after them, untimed (see :func:`collector_frozen`)."""
    paused = collect_outside and gc.isenabled()
    if paused:
        gc.disable()
    try:
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(device)
        return (time.perf_counter() - start) / iters
    finally:
        if paused:
            gc.enable()
            gc.collect()


@contextlib.contextmanager
def collector_frozen():
    """Move every object alive now (the models, optimisers, compiled kernels) out of the
    garbage collector's reach (``gc.freeze``) for the duration, so that a collection
    walks only what the steps allocate. With :func:`time_steps`' ``collect_outside``,
    the collections fall between the timed blocks instead of pausing, for tens of
    milliseconds, whichever variant happens to run when a threshold is crossed."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def median_interval(values, confidence=0.95):
    """A distribution-free confidence interval of the median of ``values`` (independent
    draws): the order statistics ``(X_(j), X_(n+1-j))`` with the largest ``j`` for which
    ``P(Binomial(n, 1/2) <= j - 1) <= (1 - confidence) / 2``, which cover the true
    median with probability at least ``confidence``. With too few values for that
    (fewer than 6 at 95%) the whole range, whose coverage is lower."""
    xs = sorted(values)
    n = len(xs)
    tail = (1 - confidence) / 2
    below, j = 0.0, 0  # below = P(B <= j - 1)
    while j < n:
        p = math.comb(n, j) / 2 ** n
        if below + p > tail:
            break
        below += p
        j += 1
    if j == 0:
        return xs[0], xs[-1]
    return xs[j - 1], xs[n - j]


def round_order(count, rng, previous_last=None):
    """The order in which ``count`` models run in one round: a random permutation (from
    ``rng``), whose first model is not ``previous_last``, the last of the round before.

    A fixed order, or one that alternates with its reverse, gives every model a fixed
    place and fixed neighbours; with alternation the first and the last model run twice
    in a row at every turn of the rounds and the others never. A drawn order gives every
    model every place and neighbour alike, on average over the rounds."""
    order = list(range(count))
    rng.shuffle(order)
    if count > 1 and order[0] == previous_last:
        order[0], order[1] = order[1], order[0]
    return order


def default_seeds(backbone_only):
    """Models per variant: 3 for detectors, 1 for backbones. A detector's step time
    depends on the model it runs, not only on its architecture: on an H200 (Faster R-CNN
    R50-FPN training steps, batch 2, 800x1216) copies of one baseline, with the same
    weights, took 0.97-1.02 x its time, and baselines of other seeds, whose random heads
    also proposed other boxes, 1.015-1.035 x (:func:`fix_proposals` now gives every
    model the same boxes). A variant's time is the mean over its models, so that no
    single model's offset decides a ratio. A backbone's work does not depend on its
    weights."""
    return 1 if backbone_only else 3


def run_benchmark(variants=DEFAULT_VARIANTS, modes=MODES, device='cpu', amp=False,
                  batch_size=1, shape=(512, 512), channels_last=False,
                  backbone_only=False, rounds=7, warmup=2, iters=3, configs=None, seed=0,
                  seeds=None, random_proposals=False, time_plugins=False,
                  breakdown=False, collect_in_steps=False, log=print):
    """Time every variant in every mode; return a list of result dicts (one per variant
    and mode) with ``ms`` (median), ``ratio`` (median of per-round ratios to the
    baseline), ``ratio_lo``/``ratio_hi`` (the median's 95% confidence interval,
    :func:`median_interval`), ``ratio_min``/``ratio_max`` (their spread) and
    ``backbone`` (the variant's backbone type).

    Each variant is ``seeds`` models (built from the seeds ``seed``, ``seed + 1``, ...;
    default :func:`default_seeds`); every round runs ``iters`` steps of every model, in
    an order drawn anew each round (:func:`round_order`), and a variant's time in a
    round is the mean over its models. Detectors propose fixed boxes
    (:func:`fix_proposals`, learning rate 0) unless ``random_proposals``, where each
    keeps its random output layers and trains at a learning rate of 1e-4.
    ``time_plugins``: also ``plugin_ms``, the median
    over rounds of the time per step inside the plugins' forward, and ``plugin_share``,
    the median of (that time / the rest of the step): the ratio the plugins alone
    account for, steadier than ratios of whole steps where the machine's speed drifts
    (on CPU; on CUDA host time). Forward hooks take that time in one more step per model
    and round, after its timed steps, which run without hooks
    (:meth:`Runner.plugin_hooks`); a hooked plugin in ``FusedTailResNet`` leaves the
    residual addition and ReLU to mmdet's block, so for ``se`` and ``cbam`` that time is
    the plugins' without the block tail. Python's garbage collector runs between the timed
    blocks, over what the steps allocated (:func:`collector_frozen`);
    ``collect_in_steps`` leaves it to run wherever its thresholds fall, inside them.
    ``breakdown``: after the timed rounds, each training result also gets what
    :func:`training_breakdown` measures on the variant's first model."""
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f'variant must be one of {list(VARIANTS)}, got {v!r}')
    for m in modes:
        if m not in MODES:
            raise ValueError(f'mode must be one of {list(MODES)}, got {m!r}')
    if seeds is None:
        seeds = default_seeds(backbone_only)
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f'seeds (models per variant) must be an integer >= 1, got {seeds!r}')
    if breakdown and 'train' not in modes:
        raise ValueError(f"breakdown measures training steps: modes must include 'train', "
                         f'got {list(modes)}')
    if random_proposals and backbone_only:
        raise ValueError('random_proposals applies to detectors; a backbone '
                         '(backbone_only=True) proposes nothing')
    if 'baseline' not in variants:
        variants = ('baseline',) + tuple(variants)
    device = torch.device(device)
    torch.manual_seed(seed)
    images, samples = synthetic_batch(batch_size, shape, device, seed=seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.contiguous(memory_format=memory_format)
    fixed = not (backbone_only or random_proposals)  # fix_proposals, learning rate 0
    runners, backbones = [], {}
    for name in variants:
        cfg = variant_config(name, configs)
        backbones[name] = cfg.model.backbone.type
        for model_seed in range(seed, seed + seeds):
            torch.manual_seed(model_seed)
            model = build_model(cfg, backbone_only)
            model = model.to(device).to(memory_format=memory_format)
            if fixed:
                fix_proposals(model)
            runners.append(Runner(name, model, backbone_only, amp, device,
                                  lr=0.0 if fixed else 1e-4))
    with contextlib.nullcontext() if collect_in_steps else collector_frozen():
        results = _time_modes(runners, modes, images, samples, device, rounds, warmup,
                              iters, time_plugins, not collect_in_steps, log, seed)
    for r in results:
        r['backbone'] = backbones[r['variant']]
    counts = replay_counts(runners, modes, images, samples)
    if counts:
        for r in results:
            if (r['variant'], r['mode']) in counts:
                r.update(counts[r['variant'], r['mode']])
        log(format_replayed(results))
    if breakdown:
        first = {}
        for r in runners:
            first.setdefault(r.name, r)
        parts = dict(zip(first, training_breakdown(list(first.values()), images, samples)))
        for r in results:
            if r['mode'] == 'train':
                r.update(parts[r['variant']])
        log(format_breakdown([r for r in results if r['mode'] == 'train']))
    return results


def replay_counts(runners, modes, images, samples):
    """On CUDA, per plugin variant (its first model) and mode: ``plugin_calls``, the CBAM
    and SE calls of one step, and ``replayed_calls``, how many of them were replayed from
    C++ (:func:`.ops.triton_programs.replayed_calls`), counted in one more step after
    the timed rounds; ``replay_expected``: whether the variant's ``implementation``
    replays calls from C++ where the extension is built (:func:`.ops.bindable`; not
    ``-graph``, not ``-ref``). A plugin variant whose calls were not replayed timed
    another implementation than the one shipped (Triton kernels launched from Python,
    :mod:`.ops.extensions`). Empty on CPU, where no call is replayed."""
    from .models import CBAM, SE
    from .ops import bindable
    from .ops.triton_programs import replayed_calls
    first = {}
    for r in runners:
        first.setdefault(r.name, r)
    counts = {}
    for name, r in first.items():
        implementation = split_variant(name)[1]
        if r.device.type != 'cuda' or name == 'baseline' or implementation == 'reference':
            continue
        plugins = sum(isinstance(m, (CBAM, SE)) for m in r.model.modules())
        for mode in modes:
            r.set_mode(mode)
            before = replayed_calls(r.model)
            getattr(r, f'{mode}_step')(images, samples)
            _sync(r.device)
            counts[name, mode] = dict(plugin_calls=plugins,
                                      replayed_calls=replayed_calls(r.model) - before,
                                      replay_expected=bindable(implementation))
    return counts


def format_replayed(results):
    """The calls replayed from C++ per step (:func:`replay_counts`), and a warning for
    every variant and mode whose calls should all have been replayed and were not."""
    from .ops import extensions
    counted = [r for r in results if 'replayed_calls' in r]
    line = 'calls replayed from C++ per step: ' + ', '.join(
        f"{r['variant']} {r['mode']} {r['replayed_calls']}/{r['plugin_calls']}"
        for r in counted)
    lines = [line]
    for r in counted:
        if r['replay_expected'] and r['replayed_calls'] < r['plugin_calls']:
            lines.append(
                f"WARNING: {r['variant']} {r['mode']}: {r['replayed_calls']} of "
                f"{r['plugin_calls']} plugin calls replayed from C++; its time is not that "
                f"of the shipped path ({extensions.describe('cuda')})")
    return '\n'.join(lines)


def training_breakdown(runners, images, samples, rounds=20, steps=5):
    """Parts of a training step that a plugin adds to, measured on each of ``runners``
    after the timed rounds, one dict per runner: ``param_tensors`` (the optimised
    parameter tensors: each costs the autograd engine an ``AccumulateGrad`` call and
    the optimiser and gradient scaler per-tensor host work), ``optimizer_ms`` (the
    scaler's and the optimiser's step after a backward, synchronised, with the same
    gradients every time; the runners take turns, median of ``rounds``) and, on CUDA,
    ``kernel_ms`` (the GPU time of every kernel of a training step, ``torch.profiler``;
    mean of ``steps``)."""
    grads = []
    for r in runners:
        r.set_mode('train')
        r.train_step(images, samples)  # leaves gradients for the optimiser's steps
        grads.append([(p, p.grad.clone()) for g in r.optimizer.param_groups
                      for p in g['params'] if p.grad is not None])
    seconds = [[] for _ in runners]
    for _ in range(rounds):
        for r, saved, mine in zip(runners, grads, seconds):
            with torch.no_grad():
                for p, grad in saved:  # the scaler unscales them in place
                    p.grad.copy_(grad)
            _sync(r.device)
            start = time.perf_counter()
            r.scaler.step(r.optimizer)
            r.scaler.update()
            _sync(r.device)
            mine.append(time.perf_counter() - start)
    parts = []
    for r, mine in zip(runners, seconds):
        parts.append(dict(
            param_tensors=sum(len(g['params']) for g in r.optimizer.param_groups),
            optimizer_ms=statistics.median(mine) * 1e3, kernel_ms=None))
        if r.device.type == 'cuda':
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(steps):
                    r.train_step(images, samples)
                _sync(r.device)
            parts[-1]['kernel_ms'] = sum(
                e.device_time_total for e in prof.key_averages()) / steps / 1e3
    return parts


def format_breakdown(results):
    """The training results' :func:`training_breakdown`, each against the baseline's,
    with the difference as a share of the baseline's step."""
    base = next(r for r in results if r['variant'] == 'baseline')
    kernels = base['kernel_ms'] is not None
    lines = [f"{'variant':<10} {'tensors':>7} {'optimiser ms':>13} {'(+ % of step)':>14}"
             + (f" {'kernels ms':>11} {'(+ % of step)':>14}" if kernels else '')]
    for r in results:
        line = (f"{r['variant']:<10} {r['param_tensors']:7d} {r['optimizer_ms']:13.2f} "
                f"{_share(r['optimizer_ms'] - base['optimizer_ms'], base['ms']):>14}")
        if kernels:
            line += (f" {r['kernel_ms']:11.2f} "
                     f"{_share(r['kernel_ms'] - base['kernel_ms'], base['ms']):>14}")
        lines.append(line)
    return '\n'.join(lines)


def _share(extra_ms, step_ms):
    return f'{extra_ms:+.2f} ({100 * extra_ms / step_ms:+.1f}%)'


def _time_modes(runners, modes, images, samples, device, rounds, warmup, iters,
                time_plugins, collect_outside, log, seed=0):
    results = []
    models_of = {}  # variant name -> indices of its runners
    for i, r in enumerate(runners):
        models_of.setdefault(r.name, []).append(i)
    names = list(models_of)
    for mode in modes:
        for r in runners:
            r.set_mode(mode)
        steps = [(lambda r=r: getattr(r, f'{mode}_step')(images, samples)) for r in runners]
        for _ in range(warmup):
            for step in steps:
                time_steps(step, 1, device, collect_outside)
        if collect_outside:  # what the warm-up built (kernels, plans) stays too
            gc.freeze()
        rng = random.Random(seed)
        per_round = {name: [] for name in names}
        plugin_round = {name: [] for name in names}
        last = None
        for _ in range(rounds):
            seconds, plugin = [0.0] * len(runners), [0.0] * len(runners)
            order = round_order(len(runners), rng, last)
            for i in order:
                seconds[i] = time_steps(steps[i], iters, device, collect_outside)
                if time_plugins:  # one more step, with hooks: its time inside the plugins
                    runners[i].plugin_hooks(True)
                    runners[i].plugin_seconds = 0.0
                    time_steps(steps[i], 1, device, collect_outside)
                    plugin[i] = runners[i].plugin_seconds
                    runners[i].plugin_hooks(False)
            last = order[-1]
            for name, mine in models_of.items():
                per_round[name].append(statistics.fmean(seconds[i] for i in mine))
                plugin_round[name].append(statistics.fmean(plugin[i] for i in mine))
        base = per_round['baseline']
        for name in names:
            ratios = [t / b for t, b in zip(per_round[name], base)]
            lo, hi = median_interval(ratios)
            results.append(dict(
                variant=name, mode=mode, ms=statistics.median(per_round[name]) * 1e3,
                ratio=statistics.median(ratios), ratio_lo=lo, ratio_hi=hi,
                ratio_min=min(ratios), ratio_max=max(ratios)))
            if time_plugins:
                results[-1].update(
                    plugin_ms=statistics.median(plugin_round[name]) * 1e3,
                    plugin_share=statistics.median(
                        p / (t - p) for p, t in zip(plugin_round[name], per_round[name])))
        log(format_table([x for x in results if x['mode'] == mode]))
    return results


def format_table(results):
    plugins = any('plugin_ms' in r for r in results)
    lines = [f"{'mode':<6} {'variant':<10} {'ms':>9} {'x baseline':>11} "
             f"{'[95% CI of median]':>19} {'(min..max over rounds)':>24}"
             + (f" {'in plugins ms':>14} {'/ rest':>7}" if plugins else '')]
    for r in results:
        line = (f"{r['mode']:<6} {r['variant']:<10} {r['ms']:9.2f} {r['ratio']:11.3f} "
                f"{'[' + format(r['ratio_lo'], '.3f') + '..':>11}"
                f"{format(r['ratio_hi'], '.3f') + ']':<8} "
                f"{'(' + format(r['ratio_min'], '.3f') + '..':>16}"
                f"{format(r['ratio_max'], '.3f') + ')':<8}")
        if plugins:
            line += f" {r['plugin_ms']:14.2f} {100 * r['plugin_share']:6.1f}%"
        lines.append(line)
    return '\n'.join(lines)


# the settings that define the work a run timed: runs pooled by pool_runs share them
WORKLOAD = ('batch_size', 'shape', 'amp', 'channels_last', 'backbone_only',
            'random_proposals')
# what runs written before a setting existed did: they had random proposals
WORKLOAD_BEFORE = {'random_proposals': True}


def pool_runs(runs):
    """Pool several runs of one workload, each a dict as ``tools/benchmark.py --json``
    writes it (``args``, ``device``, ``results``): per mode and variant, each run's
    median ratio to the baseline (None where the run lacks the variant), and the mean,
    standard deviation and range of those ratios. Runs in separate processes build new
    models and meet the machine in other states; the spread of their ratios shows what
    one run's confidence interval, which covers only its own rounds, does not.

    A run that does not record a setting of :data:`WORKLOAD_BEFORE` was written before
    it existed and counts as that setting's value then. Raises ValueError for fewer than
    two runs, a run that does not record another setting of :data:`WORKLOAD`, or runs
    that differ in their device or in such a setting (rounds, steps and models per
    variant may differ), or in the fast paths they record (``fast_paths``: a run without
    the C++ extensions timed other implementations; runs written before it was recorded
    are not compared), or in the backbone type a variant records (``backbone``; a run
    written before it was recorded counts as None, since the variants ``se`` and
    ``cbam`` then had mmdet's ResNet)."""
    if len(runs) < 2:
        raise ValueError(f'pooling needs at least 2 runs, got {len(runs)}')
    for index, run in enumerate(runs):
        missing = [name for name in WORKLOAD
                   if name not in run['args'] and name not in WORKLOAD_BEFORE]
        if missing:
            raise ValueError(f'run {index + 1} does not record {missing}')
    for name in ('device',) + WORKLOAD:
        values = [run['device'] if name == 'device'
                  else run['args'].get(name, WORKLOAD_BEFORE.get(name)) for run in runs]
        if any(value != values[0] for value in values):
            raise ValueError(f'the runs differ in {name!r} ({values}): only runs of one '
                             'workload on one kind of device pool')
    paths = [run['fast_paths'] for run in runs if 'fast_paths' in run]
    if any(p != paths[0] for p in paths):
        raise ValueError(f"the runs differ in 'fast_paths' ({paths}): only runs of the "
                         'same implementations pool')
    backbone = {}  # variant -> backbone type of each run that has it
    for run in runs:
        for r in run['results']:
            backbone.setdefault(r['variant'], set()).add(r.get('backbone'))
    for variant, types in backbone.items():
        if len(types) > 1:
            raise ValueError(f"the runs differ in the 'backbone' of variant {variant!r} "
                             f'({sorted(types, key=str)}): only runs of one model pool')
    ratios = {}  # (mode, variant) -> ratio of each run, in the order first met
    for index, run in enumerate(runs):
        for r in run['results']:
            ratios.setdefault((r['mode'], r['variant']), [None] * len(runs))[index] = \
                r['ratio']
    pooled = []
    for (mode, variant), each in ratios.items():
        values = [v for v in each if v is not None]
        pooled.append(dict(
            mode=mode, variant=variant, ratios=each, runs=len(values),
            mean=statistics.fmean(values),
            sd=statistics.stdev(values) if len(values) > 1 else float('nan'),
            min=min(values), max=max(values)))
    return pooled


def format_pooled(pooled):
    lines = [f"{'mode':<6} {'variant':<10} {'runs':>4} {'mean':>7} {'sd':>7} "
             f"{'(min..max)':>16}  ratio of each run"]
    for p in pooled:
        each = ' '.join('-' if v is None else f'{v:.3f}' for v in p['ratios'])
        lines.append(f"{p['mode']:<6} {p['variant']:<10} {p['runs']:>4} {p['mean']:7.3f} "
                     f"{p['sd']:7.3f} {'(' + format(p['min'], '.3f') + '..':>9}"
                     f"{format(p['max'], '.3f') + ')':<7}  {each}")
    return '\n'.join(lines)


def describe_device(device):
    device = torch.device(device)
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)}, torch {torch.version.__version__}'
    return (f'CPU, {torch.get_num_threads()} threads, torch {torch.version.__version__}')


def add_profile_arguments(parser):
    """``--device``, ``--amp``, ``--batch-size``, ``--shape`` and ``--json`` of the GPU
    profiling tools (tools/profile_stages.py, tools/profile_step.py)."""
    parser.add_argument('--device', default='cuda', help="'cuda', 'cuda:N' or 'cpu'")
    parser.add_argument('--amp', action='store_true', help='float16 autocast (CUDA)')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--shape', default='800x1216', type=parse_shape,
                        help="the detector's input HxW")
    parser.add_argument('--json', help='also write the results to this file')


def check_profile_arguments(parser, args, positive):
    """Refuse (``parser.error``) each ``--name`` of ``positive`` below 1 and ``--amp`` off
    CUDA."""
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.amp and not args.device.startswith('cuda'):
        parser.error('--amp (float16 autocast) needs --device cuda')


def write_profile(args, results):
    """The results, the arguments and the device, as JSON to ``args.json`` if set."""
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), device=describe_device(args.device),
                           results=results), f, indent=1)


def parse_shape(text):
    parts = [p for p in str(text).lower().replace('x', ',').split(',') if p]
    if len(parts) == 1:
        parts = parts * 2
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        h = w = -1
    if h < 32 or w < 32:
        raise ValueError(f'shape must be HxW (or one size) with H, W >= 32, got {text!r}')
    return h, w
