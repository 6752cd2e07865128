"""Time baseline, SE and CBAM detectors (or their backbones) in one process, interleaved.

    python benchmarks/benchmark.py --device cuda --amp --batch-size 2 --shape 800x1216 \\
        --rounds 30 --iters 2 --variants baseline se-ref se cbam-ref cbam
    python benchmarks/benchmark.py --device cpu --threads 2 --backbone-only --shape 512 \\
        --modes infer --rounds 30 --variants baseline se-ref se cbam-ref cbam

Variants: ``baseline``, ``se`` and ``cbam`` are the configs
configs/faster_rcnn_r50{,_se,_cbam}_coco.py as shipped (mmdet's ResNet-50, with the
plugins in its blocks for ``se`` and ``cbam``, which run their fast paths);
``se-ref`` and ``cbam-ref`` are the same models with ``implementation='reference'``
(the paper's equations in plain PyTorch).

Method: every variant is ``--seeds`` models that differ only in the seed of their random
weights, all fed the same synthetic batch. After warm-up rounds, every round runs
``--iters`` steps of every model, in an order drawn anew each round
(:func:`round_order`), so that drifts of the machine (clocks, other processes) hit all
variants alike. A variant's time in a round is the mean step time of its models, and
its ratio in that round is that time over the baseline's. Reported per variant and mode:
the median time, the median ratio with a 95% confidence interval of that median
(:func:`median_interval`, order statistics, no assumption on the distribution) and the
min..max of the ratios. Detectors propose the same boxes in every model
(:func:`fix_proposals`), so that the ratios hold the plugins' cost and not what random
heads make of their proposals. Python's garbage collector runs between the timed blocks,
not inside them (:func:`collector_frozen`).

The tool also prints which fast paths this build runs (the compiled extensions are
optional) and, on CUDA, how many plugin calls of one step were replayed from C++, with a
warning where a fast variant's calls were not all replayed (its time is then not that of
the shipped path). ``--json`` writes the results; ``benchmarks/pool.py`` pools several
such files.
"""
import argparse
import contextlib
import copy
import gc
import json
import math
import os.path as osp
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout: import cbam_mmdet without installing it
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

CONFIGS = {
    'baseline': 'configs/faster_rcnn_r50_coco.py',
    'se': 'configs/faster_rcnn_r50_se_coco.py',
    'cbam': 'configs/faster_rcnn_r50_cbam_coco.py',
}
VARIANTS = ('baseline', 'se-ref', 'se', 'cbam-ref', 'cbam')
MODES = ('train', 'infer')


def variant_config(name):
    """The mmengine Config of a variant: the shipped config of ``baseline``, ``se`` or
    ``cbam``; for ``<plugin>-ref`` that of ``<plugin>`` with every plugin's
    ``implementation='reference'``. ``init_cfg`` is dropped (no download)."""
    from mmengine.config import Config
    if name not in VARIANTS:
        raise ValueError(f'variant must be one of {list(VARIANTS)}, got {name!r}')
    reference = name.endswith('-ref')
    base = name[:-len('-ref')] if reference else name
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[base]))
    cfg.model.backbone.init_cfg = None
    if base != 'baseline' and not cfg.model.backbone.get('plugins'):
        raise ValueError(f'config {CONFIGS[base]} of variant {name!r} has no '
                         'model.backbone.plugins')
    if reference:
        for plugin in cfg.model.backbone.plugins:
            plugin.cfg.implementation = 'reference'
    return cfg


def build_model(cfg, backbone_only):
    """The detector of ``cfg`` (or its backbone), with random weights."""
    import cbam_mmdet  # noqa: F401  (registers CBAM and SE)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return MODELS.build(copy.deepcopy(cfg.model.backbone if backbone_only else cfg.model))


# the layers whose outputs decide a two-stage detector's proposals and detections
OUTPUT_LAYERS = ('rpn_head.rpn_cls', 'rpn_head.rpn_reg', 'roi_head.bbox_head.fc_cls')


def fix_proposals(model):
    """Zero the weights and biases of the detector's :data:`OUTPUT_LAYERS`, so that it
    proposes the same boxes whatever its other weights: every anchor scores alike and
    regresses to itself, and every RoI gets the same class scores (all below the test
    score threshold, so no model keeps a detection). The box regression layer keeps its
    weights, through which the training loss still sends gradients into the backbone.
    The benchmark trains at a learning rate of 0 (the optimiser still runs its full
    update), which keeps these weights, and so the proposals, through training steps.

    With random output layers each model would propose its own boxes, and the heads'
    work (NMS, assignment, RoIAlign) would follow its weights: data-dependent work that
    no plugin causes. Raises ValueError for a model without these layers."""
    missing = [name for name in OUTPUT_LAYERS
               if not isinstance(_submodule(model, name), (torch.nn.Conv2d, torch.nn.Linear))]
    if missing:
        raise ValueError(f'fixed proposals need a two-stage detector with the layers '
                         f'{list(OUTPUT_LAYERS)}; {type(model).__name__} lacks {missing}')
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


def plugin_modules(model):
    """The CBAM and SE modules of ``model``."""
    from cbam_mmdet.models import CBAM, SE
    return [m for m in model.modules() if isinstance(m, (CBAM, SE))]


@dataclass
class Runner:
    """One model of a variant: the model, its optimiser (SGD at learning rate 0, which
    keeps :func:`fix_proposals`) and its training and inference steps."""
    name: str
    model: torch.nn.Module
    backbone_only: bool
    amp: bool
    device: torch.device
    optimizer: torch.optim.Optimizer = None
    scaler: object = None
    plugin_seconds: float = 0.0  # time inside the plugins' forward (plugin_hooks)
    _hooks: list = field(default_factory=list)

    def __post_init__(self):
        self.optimizer = torch.optim.SGD(
            [p for p in self.model.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

    def plugin_hooks(self, enabled):
        """With ``enabled``, add to ``plugin_seconds`` the wall time of every CBAM and SE
        forward (forward hooks); else remove the hooks. On CUDA this is host time, the
        kernels run asynchronously. The hooks slow the forward beyond their own time, so
        the timed steps run without them."""
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

        for module in plugin_modules(self.model):
            self._hooks.append(module.register_forward_pre_hook(start))
            self._hooks.append(module.register_forward_hook(stop))

    def _autocast(self):
        dtype = torch.float16 if self.device.type == 'cuda' else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp)

    def set_mode(self, mode):
        """``model.train()`` for ``'train'``, ``model.eval()`` for ``'infer'``: once per
        mode, outside the timed steps, as mmengine's loops do; in every step it would
        charge each variant a walk over its modules, more of them with plugins."""
        self.model.train(mode == 'train')

    def train_step(self, images, samples):
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            if self.backbone_only:
                loss = sum(o.float().mean() for o in self.model(images))
            else:
                loss, _ = self.model.parse_losses(self.model(images, samples, mode='loss'))
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def infer_step(self, images, samples):
        with torch.no_grad(), self._autocast():
            if self.backbone_only:
                self.model(images)
            else:
                self.model(images, samples, mode='predict')

    def step(self, mode, images, samples):
        getattr(self, f'{mode}_step')(images, samples)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(step, iters, device):
    """Mean seconds per call of ``step`` over ``iters`` calls, synchronised. Python's
    cyclic garbage collector is paused while the calls are timed and collects once
    after them, untimed."""
    paused = gc.isenabled()
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
    """Move every object alive now (models, optimisers, compiled kernels) out of the
    garbage collector's reach (``gc.freeze``) for the duration, so that the collections
    after each timed block (:func:`time_steps`) walk only what the steps allocated.
    Otherwise a collection, tens of milliseconds with large models alive, pauses
    whichever variant happens to run when a threshold is crossed."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def median_interval(values, confidence=0.95):
    """A distribution-free confidence interval of the median of ``values`` (independent
    draws): the order statistics ``(X_(j), X_(n+1-j))`` with the largest ``j`` for which
    ``P(Binomial(n, 1/2) <= j - 1) <= (1 - confidence) / 2``; they cover the true median
    with probability at least ``confidence``. With too few values for that (fewer than 6
    at 95%) the whole range, whose coverage is lower."""
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
    ``rng``) whose first model is not ``previous_last``, the last of the round before.
    A fixed order would give every model a fixed place and fixed neighbours; a drawn one
    gives each every place and neighbour alike on average, and no model runs twice in a
    row at the turn of two rounds."""
    order = list(range(count))
    rng.shuffle(order)
    if count > 1 and order[0] == previous_last:
        order[0], order[1] = order[1], order[0]
    return order


def default_seeds(backbone_only):
    """Models per variant: 3 for detectors, whose step time differs a little from model
    to model even with fixed proposals, so that no single model's offset decides a
    ratio; 1 for backbones, whose work does not depend on their weights."""
    return 1 if backbone_only else 3


def run_benchmark(variants=VARIANTS, modes=MODES, device='cpu', amp=False, batch_size=1,
                  shape=(512, 512), channels_last=False, backbone_only=False, rounds=7,
                  warmup=2, iters=3, seed=0, seeds=None, time_plugins=False, log=print):
    """Time every variant in every mode (the baseline is added where missing); return one
    dict per mode and variant with ``ms`` (median step time), ``ratio`` (median of the
    per-round ratios to the baseline), ``ratio_lo``/``ratio_hi`` (95% confidence interval
    of that median, :func:`median_interval`) and ``ratio_min``/``ratio_max``.

    Each variant is ``seeds`` models (default :func:`default_seeds`) built after
    ``torch.manual_seed(seed + i)``. ``time_plugins``: also ``plugin_ms``, the median
    time per step inside the plugins' forward, and ``plugin_share``, the median of that
    time over the rest of the step; forward hooks take it in one more step per model and
    round, after the timed ones. On CUDA the plugin variants' results also get
    ``plugin_calls`` and ``replayed_calls`` (:func:`replay_counts`)."""
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f'variant must be one of {list(VARIANTS)}, got {v!r}')
    for m in modes:
        if m not in MODES:
            raise ValueError(f'mode must be one of {list(MODES)}, got {m!r}')
    seeds = default_seeds(backbone_only) if seeds is None else seeds
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f'seeds (models per variant) must be an integer >= 1, got {seeds!r}')
    variants = ['baseline'] + [v for v in variants if v != 'baseline']
    device = torch.device(device)
    images, samples = synthetic_batch(batch_size, shape, device, seed=seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.contiguous(memory_format=memory_format)
    runners = []
    for name in dict.fromkeys(variants):
        cfg = variant_config(name)
        for model_seed in range(seed, seed + seeds):
            torch.manual_seed(model_seed)
            model = build_model(cfg, backbone_only).to(device).to(memory_format=memory_format)
            if not backbone_only:
                fix_proposals(model)
            runners.append(Runner(name, model, backbone_only, amp, device))
    results = []
    with collector_frozen():
        for mode in modes:
            results += _time_mode(runners, mode, images, samples, device, rounds, warmup,
                                  iters, time_plugins, seed)
            log(format_table([r for r in results if r['mode'] == mode]))
    counts = replay_counts(runners, modes, images, samples)
    if counts:
        for r in results:
            r.update(counts.get((r['variant'], r['mode']), {}))
        log(format_replayed(results, describe_fast_paths(device)))
    return results


def _time_mode(runners, mode, images, samples, device, rounds, warmup, iters,
               time_plugins, seed):
    models_of = {}  # variant -> indices of its runners
    for i, r in enumerate(runners):
        models_of.setdefault(r.name, []).append(i)
    for r in runners:
        r.set_mode(mode)
    steps = [(lambda r=r: r.step(mode, images, samples)) for r in runners]
    for _ in range(warmup):
        for step in steps:
            time_steps(step, 1, device)
    gc.freeze()  # what the warm-up built (kernels, plans) stays too
    rng, last = random.Random(seed), None
    times = {name: [] for name in models_of}
    plugin_times = {name: [] for name in models_of}
    for _ in range(rounds):
        seconds, plugin = [0.0] * len(runners), [0.0] * len(runners)
        order = round_order(len(runners), rng, last)
        for i in order:
            seconds[i] = time_steps(steps[i], iters, device)
            if time_plugins:  # one more step, with hooks: its time inside the plugins
                runners[i].plugin_hooks(True)
                runners[i].plugin_seconds = 0.0
                time_steps(steps[i], 1, device)
                plugin[i] = runners[i].plugin_seconds
                runners[i].plugin_hooks(False)
        last = order[-1]
        for name, mine in models_of.items():
            times[name].append(statistics.fmean(seconds[i] for i in mine))
            plugin_times[name].append(statistics.fmean(plugin[i] for i in mine))
    results = []
    for name in models_of:
        ratios = [t / b for t, b in zip(times[name], times['baseline'])]
        lo, hi = median_interval(ratios)
        results.append(dict(
            variant=name, mode=mode, ms=statistics.median(times[name]) * 1e3,
            ratio=statistics.median(ratios), ratio_lo=lo, ratio_hi=hi,
            ratio_min=min(ratios), ratio_max=max(ratios)))
        if time_plugins:
            results[-1].update(
                plugin_ms=statistics.median(plugin_times[name]) * 1e3,
                plugin_share=statistics.median(
                    p / (t - p) for p, t in zip(plugin_times[name], times[name])))
    return results


def _replay_counter():
    """``cbam_mmdet.ops.triton_programs.replayed_calls`` (plugin calls replayed from C++
    so far in this process), or None where this build has no such counter."""
    try:
        from cbam_mmdet.ops.triton_programs import replayed_calls
    except ImportError:
        return None
    return replayed_calls


def replay_counts(runners, modes, images, samples):
    """On CUDA, per fast plugin variant (``se``, ``cbam``: its first model) and mode:
    ``plugin_calls``, the CBAM and SE calls of one step, and ``replayed_calls``, how many
    of them were replayed from C++, counted over one more step after the timed rounds.
    Empty on CPU, where no call is replayed, and where the counter is missing."""
    counter = _replay_counter()
    counts = {}
    for name in ('se', 'cbam'):
        r = next((r for r in runners if r.name == name), None)
        if counter is None or r is None or r.device.type != 'cuda':
            continue
        for mode in modes:
            r.set_mode(mode)
            _sync(r.device)
            before = counter()
            r.step(mode, images, samples)
            _sync(r.device)
            counts[name, mode] = dict(plugin_calls=len(plugin_modules(r.model)),
                                      replayed_calls=counter() - before)
    return counts


def format_replayed(results, fast_paths):
    """The calls replayed from C++ per step (:func:`replay_counts`), and a warning for
    every variant and mode whose calls were not all replayed."""
    counted = [r for r in results if 'replayed_calls' in r]
    lines = ['calls replayed from C++ per step: ' + ', '.join(
        f"{r['variant']} {r['mode']} {r['replayed_calls']}/{r['plugin_calls']}"
        for r in counted)]
    for r in counted:
        if r['replayed_calls'] < r['plugin_calls']:
            lines.append(
                f"WARNING: {r['variant']} {r['mode']}: {r['replayed_calls']} of "
                f"{r['plugin_calls']} plugin calls replayed from C++; its time is not that "
                f'of the shipped path ({fast_paths})')
    return '\n'.join(lines)


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


def describe_device(device):
    device = torch.device(device)
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}'
    return f'CPU, {torch.get_num_threads()} threads, torch {torch.__version__}'


def describe_fast_paths(device):
    """One line on the fast paths that ``device`` runs (``cbam_mmdet.ops.extensions``)."""
    from cbam_mmdet.ops import extensions
    return extensions.describe(str(device))


def parse_shape(text):
    parts = [p for p in str(text).lower().replace('x', ',').split(',') if p]
    if len(parts) == 1:
        parts = parts * 2
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        h = w = -1
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(
            f'shape must be HxW (or one size) with H, W >= 32, got {text!r}')
    return h, w


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--amp', action='store_true',
                        help='autocast (float16 on CUDA, bfloat16 on CPU)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--shape', default='512x512', type=parse_shape,
                        help='input HxW, or one size for both')
    parser.add_argument('--channels-last', action='store_true',
                        help='images and models in channels_last memory format')
    parser.add_argument('--backbone-only', action='store_true',
                        help="time the configs' backbones instead of the detectors")
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds first')
    parser.add_argument('--iters', type=int, default=3, help='steps per model per round')
    parser.add_argument('--seeds', type=int, help='models per variant (default: 3 for '
                        'detectors, 1 with --backbone-only)')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (CPU)')
    parser.add_argument('--time-plugins', action='store_true',
                        help='also report the time inside the CBAM/SE modules per step and '
                        'its share of the rest of the step (forward hooks, in one more '
                        'step per model and round; host time on CUDA)')
    parser.add_argument('--json', help='also write the results to this file')
    args = parser.parse_args(argv)
    for name in ('batch_size', 'rounds', 'iters', 'seeds', 'threads'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.warmup < 0:
        parser.error('--warmup must be >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.seeds = args.seeds or default_seeds(args.backbone_only)
    device = describe_device(args.device)
    fast_paths = describe_fast_paths(args.device)
    print(f'device: {device}; batch {args.batch_size}, {args.shape[0]}x{args.shape[1]}, '
          f'amp={args.amp}, channels_last={args.channels_last}, '
          f'backbone_only={args.backbone_only}, {args.rounds} rounds x {args.iters} steps '
          f'per model after {args.warmup} warm-up rounds, {args.seeds} model(s) per variant')
    print(fast_paths)
    results = run_benchmark(
        variants=args.variants, modes=args.modes, device=args.device, amp=args.amp,
        batch_size=args.batch_size, shape=args.shape, channels_last=args.channels_last,
        backbone_only=args.backbone_only, rounds=args.rounds, warmup=args.warmup,
        iters=args.iters, seeds=args.seeds, time_plugins=args.time_plugins)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), device=device, fast_paths=fast_paths,
                           results=results), f, indent=1)
    return results


if __name__ == '__main__':
    main()
