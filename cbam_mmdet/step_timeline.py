"""Where a detector's training step spends its time, block by block: host time, and how
far the GPU is behind the host.

Every ResNet block of the backbone is timed on the host in the forward (from its first
line to its return) and in the backward (from the gradient of its output to the gradient
of its input: the autograd engine's time for the block, on the engine's thread). At every
such mark a CUDA event records when the GPU got there, and the mark's *lag* is the GPU's
time there minus the host's (both from the step's start, after a synchronisation):

- lag well above 0: the GPU is behind the host there; host time is hidden behind queued
  GPU work, and GPU time counts;
- lag near 0: the GPU waits for the host; every microsecond of host time there is a
  microsecond of the step, and GPU time is hidden.

With ``plugins=True`` every CBAM and SE module of the backbone is timed too: its
forward on the host (first line to return) and its backward (from the gradient of its
output to the gradient of its input: its autograd node and the engine's time around it).
The marks are Python hooks with a CUDA event each, so they add host time inside what
they time (compare with an identity module timed the same way where that matters).

Variants take turns step by step (an order drawn anew each round); the tables give
medians over rounds. Used by ``tools/profile_step.py``.
"""
import random
import statistics
import time

import torch

from . import benchmark

VARIANTS = ('baseline', 'se', 'cbam', 'se-ref', 'cbam-ref')
PHASES = ('loss', 'backward', 'optimiser')


class Marks:
    """Host times (and, on CUDA, events) of labelled points of one step."""

    def __init__(self, device):
        self.device = device
        self.points = []
        self.start_host = None
        self.start_event = None

    def _event(self):
        if self.device.type != 'cuda':
            return None
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        self.points = []
        self.start_host = time.perf_counter()
        self.start_event = self._event()

    def __call__(self, label):
        self.points.append((label, time.perf_counter(), self._event()))

    def collect(self):
        """{label: (host ms, lag ms or None)} after synchronising; a label marked twice
        keeps its first time."""
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        out = {}
        for label, host, event in self.points:
            host_ms = (host - self.start_host) * 1e3
            lag = None if event is None else self.start_event.elapsed_time(event) - host_ms
            out.setdefault(label, (host_ms, lag))
        return out


def backbone_blocks(model):
    """The ResNet blocks (mmdet's Bottleneck and BasicBlock) of ``model.backbone`` in
    forward order."""
    from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
    blocks = [m for m in model.backbone.modules() if isinstance(m, (Bottleneck, BasicBlock))]
    if not blocks:
        raise ValueError(f'{type(model.backbone).__name__} has no ResNet blocks to time')
    return blocks


def attention_plugins(model):
    """The CBAM and SE modules of ``model.backbone`` in forward order."""
    from .models import CBAM, SE
    return [m for m in model.backbone.modules() if isinstance(m, (CBAM, SE))]


def attach(model, marks, plugins=False):
    """Hooks marking ``f{i}`` / ``F{i}`` as block i's forward starts / returns and
    ``g{i}`` as the gradient of its output is ready; with ``plugins``, also ``p{j}`` /
    ``P{j}`` as plugin j's forward starts / returns and ``q{j}`` / ``Q{j}`` as the
    gradients of its output / input are ready. Returns the hooks' handles."""
    handles = []
    for i, block in enumerate(backbone_blocks(model)):
        def pre(module, args, i=i):
            marks(f'f{i}')

        def post(module, args, out, i=i):
            marks(f'F{i}')
            if out.requires_grad:
                out.register_hook(lambda grad: marks(f'g{i}'))
        handles += [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    for j, plugin in enumerate(attention_plugins(model) if plugins else []):
        def plugin_pre(module, args, j=j):
            marks(f'p{j}')
            if args[0].requires_grad:
                args[0].register_hook(lambda grad: marks(f'Q{j}'))

        def plugin_post(module, args, out, j=j):
            marks(f'P{j}')
            if out.requires_grad:
                out.register_hook(lambda grad: marks(f'q{j}'))
        handles += [plugin.register_forward_pre_hook(plugin_pre),
                    plugin.register_forward_hook(plugin_post)]
    return handles


def profile_step(variants=('baseline', 'se', 'cbam'), device='cuda', amp=True,
                 batch_size=2, shape=(800, 1216), rounds=20, warmup=3, seed=0,
                 plugins=False):
    """Per variant: ``{'variant', 'step_ms', 'forward_us': [per block],
    'backward_us': [per block; None for the first, whose input needs no gradient],
    'lag_ms': [at the end of each block's backward, None where unknown],
    'forward_lag_ms': [as each block returns], 'phases': {phase: [host ms, lag ms]},
    'plugin_forward_us': [per plugin], 'plugin_backward_us': [per plugin]}``
    (the plugins' lists empty without ``plugins``), medians over ``rounds`` interleaved
    training steps of one model per variant (fixed proposals, as in
    :func:`.benchmark.run_benchmark`). Lags are None on CPU."""
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f'variant must be one of {list(VARIANTS)}, got {v!r}')
    for name, value in (('rounds', rounds), ('batch_size', batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    if not isinstance(plugins, bool):
        raise ValueError(f'plugins must be True or False, got {plugins!r}')
    device = torch.device(device)
    if amp and device.type != 'cuda':
        raise ValueError("amp (float16 autocast) needs device 'cuda'")
    torch.manual_seed(seed)
    images, samples = benchmark.synthetic_batch(batch_size, shape, device, seed=seed)
    marks = Marks(device)
    runners = []
    for name in variants:
        torch.manual_seed(seed)
        model = benchmark.build_model(benchmark.variant_config(name), False).to(device)
        benchmark.fix_proposals(model)
        runner = benchmark.Runner(name, model, False, amp, device, lr=0.0)
        runner.set_mode('train')
        attach(model, marks, plugins=plugins)
        runners.append(runner)
    samples_per_variant = {r.name: [] for r in runners}
    rng = random.Random(seed)
    for index in range(warmup + rounds):
        order = runners[:]
        rng.shuffle(order)
        for r in order:
            marks.start()
            r.train_step(images, samples, mark=marks)
            points = marks.collect()
            points['step'] = ((time.perf_counter() - marks.start_host) * 1e3, None)
            if index >= warmup:
                samples_per_variant[r.name].append(points)
    return [_summary(name, steps, len(backbone_blocks(r.model)),
                     len(attention_plugins(r.model)) if plugins else 0)
            for (name, steps), r in zip(samples_per_variant.items(), runners)]


def _median(steps, label, part):
    values = [s[label][part] for s in steps if label in s and s[label][part] is not None]
    return statistics.median(values) if values else None


def _span_us(steps, begin, end):
    values = [(s[end][0] - s[begin][0]) * 1e3 for s in steps if begin in s and end in s]
    return statistics.median(values) if values else None


def _summary(name, steps, blocks, plugins=0):
    return dict(
        variant=name, step_ms=_median(steps, 'step', 0),
        forward_us=[_span_us(steps, f'f{i}', f'F{i}') for i in range(blocks)],
        forward_lag_ms=[_median(steps, f'F{i}', 1) for i in range(blocks)],
        backward_us=[None] + [_span_us(steps, f'g{i}', f'g{i - 1}') for i in range(1, blocks)],
        lag_ms=[None] + [_median(steps, f'g{i - 1}', 1) for i in range(1, blocks)],
        phases={p: [_median(steps, p, 0), _median(steps, p, 1)] for p in PHASES},
        plugin_forward_us=[_span_us(steps, f'p{j}', f'P{j}') for j in range(plugins)],
        plugin_backward_us=[_span_us(steps, f'q{j}', f'Q{j}') for j in range(plugins)])


def _fmt(value, spec, width):
    return f'{"-":>{width}}' if value is None else f'{value:{spec}}'


def format_timeline(results):
    """Per block and variant: forward host us, backward host us, the lag (ms) where the
    block's backward ends; then the sums and each phase's host time and lag."""
    names = [r['variant'] for r in results]
    head = 'block' + ''.join(f' | {n + ": fwd us, bwd us, lag ms":>32}' for n in names)
    lines = [head]
    for i in range(len(results[0]['forward_us'])):
        row = f'{i:5d}'
        for r in results:
            row += (f" | {_fmt(r['forward_us'][i], '10.1f', 10)} "
                    f"{_fmt(r['backward_us'][i], '10.1f', 10)} {_fmt(r['lag_ms'][i], '9.2f', 9)}")
        lines.append(row)
    for r in results:
        fwd = sum(v for v in r['forward_us'] if v is not None) / 1e3
        bwd = sum(v for v in r['backward_us'] if v is not None) / 1e3
        phases = ', '.join(
            f"{p} at {_fmt(h, '.2f', 1)} ms (lag {_fmt(lag, '.2f', 1)})"
            for p, (h, lag) in r['phases'].items())
        lines.append(f"{r['variant']}: step {r['step_ms']:.2f} ms; blocks' host time: "
                     f'forward {fwd:.2f} ms, backward {bwd:.2f} ms; {phases}')
    for r in results:
        spans = [[v for v in r.get(f'plugin_{part}_us', []) if v is not None]
                 for part in ('forward', 'backward')]
        if spans[0]:
            lines.append(f"{r['variant']}: {len(r['plugin_forward_us'])} plugins' host time "
                         'per call (marks included): ' + '; '.join(
                             f'{part} {statistics.median(v):.1f} us median '
                             f'({min(v):.1f}..{max(v):.1f}), {sum(v) / 1e3:.2f} ms in all'
                             for part, v in zip(('forward', 'backward'), spans) if v))
    return '\n'.join(lines)
