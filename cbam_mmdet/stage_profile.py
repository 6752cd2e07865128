"""Where one CBAM or SE module's time goes at each stage of a ResNet-50.

For each stage's block output of a ResNet-50 (256 / 512 / 1024 / 2048 channels at 1/4
to 1/32 of the image), one module per variant, timed per call:

- training (``'train'``): the forward and the backward into the input's and the
  parameters' ``.grad`` (set to None after each call, as a detector step's
  ``zero_grad`` does), with the
  modules' BatchNorm in running statistics as mmdet's ``norm_eval=True`` keeps it
  (``batch_stats=True``: batch statistics);
- inference (``'infer'``): the forward without autograd.

Each call's wall time is measured with the device as the only bound: on CUDA the calls
are queued behind a sleep kernel, so the host is ahead and the time between the first
call's start and the last call's end is the GPU's (where a call's host time exceeds its
GPU time, the host is the bound after all, and the results say so). On CUDA each
kernel's time comes from ``torch.profiler``; their sum is below the wall time by the
gaps between dependent kernels. "Per step" weighs the stages by their blocks (3, 4, 6
and 3).
"""
import statistics
import time

import torch

from .benchmark import time_steps
from .models import CBAM, SE

STAGE_BLOCKS = (3, 4, 6, 3)
VARIANTS = ('se', 'se-ref', 'cbam', 'cbam-ref')
MODES = ('train', 'infer')


def stage_shapes(batch_size, shape):
    """[(N, C, H, W) of a stage's block outputs, blocks in the stage)] of a ResNet-50
    fed ``batch_size`` images of ``shape`` (H, W): strides 4, 8, 16, 32, rounded up as
    its stride-2 convolutions and pooling round."""
    h, w = shape
    return [((batch_size, 256 * 2 ** i, -(-h // (4 * 2 ** i)), -(-w // (4 * 2 ** i))),
             blocks) for i, blocks in enumerate(STAGE_BLOCKS)]


def build_module(variant, channels, device, batch_stats=False):
    """One module of ``variant`` (``'se'``, ``'cbam'``, ``-ref``: the reference
    implementation) in training mode, its BatchNorm in running statistics unless
    ``batch_stats``."""
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
    cls = CBAM if variant.startswith('cbam') else SE
    implementation = 'reference' if variant.endswith('-ref') else 'auto'
    module = cls(channels, implementation=implementation).to(device).train()
    if not batch_stats:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    return module


def module_call(module, x, mode, amp):
    """A function running one ``mode`` call of ``module`` on ``x`` (autocast to float16
    with ``amp``); for inference the module is put in eval mode."""
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    autocast = dict(device_type=x.device.type, dtype=torch.float16, enabled=amp)
    if mode == 'infer':
        module.eval()

        def call():
            with torch.no_grad(), torch.autocast(**autocast):
                module(x)
        return call
    xg = x.detach().requires_grad_()
    leaves = [xg] + [p for p in module.parameters() if p.requires_grad]
    grad = torch.randn_like(x)

    def call():
        with torch.autocast(**autocast):
            out = module(xg)
        out.backward(grad.to(out.dtype))
        for t in leaves:
            t.grad = None
    return call


_SLEEP_RATE = {}  # cycles of torch.cuda._sleep per microsecond, by device


def _sleep_cycles_per_us(device):
    """GPU clock cycles of ``torch.cuda._sleep`` per microsecond, measured once."""
    if device not in _SLEEP_RATE:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        torch.cuda._sleep(20_000_000)
        end.record()
        torch.cuda.synchronize(device)
        _SLEEP_RATE[device] = 20_000_000 / (start.elapsed_time(end) * 1e3)
    return _SLEEP_RATE[device]


def device_bound_us(call, device, iters=40, repeats=5):
    """(median over ``repeats`` of the mean microseconds per call of ``iters`` calls,
    whether the host was the bound after all). On CUDA the calls are queued behind a
    sleep kernel longer than the host takes to queue them, so that only the GPU sets
    their pace; where the GPU had finished them when the host had queued the last (a
    call whose host time exceeds its GPU time), the host was the bound. On CPU the host
    is the device: (wall time, False)."""
    call()
    call()
    if device.type != 'cuda':
        return statistics.median(time_steps(call, iters, device) * 1e6
                                 for _ in range(repeats)), False
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        call()
    queue_us = (time.perf_counter() - start) * 1e6
    cycles = int((2 * queue_us + 2000) * _sleep_cycles_per_us(device))
    times, host_bound = [], False
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        torch.cuda._sleep(cycles)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            call()
        end.record()
        host_bound = host_bound or end.query()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(times), host_bound


def kernel_us(call, iters=20):
    """{kernel name: GPU microseconds per call} of ``call`` (CUDA, ``torch.profiler``)."""
    from torch.profiler import ProfilerActivity, profile
    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            call()
        torch.cuda.synchronize()
    times = {}
    for event in prof.key_averages():
        us = getattr(event, 'self_device_time_total', 0) / iters
        if us > 0:
            times[event.key] = times.get(event.key, 0.0) + us
    return times


def profile_stages(variants=('se', 'cbam'), mode='train', device='cuda', batch_size=2,
                   shape=(800, 1216), amp=True, channels_last=False, batch_stats=False,
                   iters=40, seed=0):
    """Per variant: ``{'variant', 'mode', 'shapes', 'wall_us': [per stage],
    'host_bound': [per stage, see device_bound_us], 'kernels': {name: [us per stage]}
    or None (CPU), 'step_wall_us', 'step_kernel_us'}``."""
    device = torch.device(device)
    if amp and device.type != 'cuda':
        raise ValueError("amp (float16 autocast) needs device 'cuda'")
    torch.manual_seed(seed)
    stages = stage_shapes(batch_size, shape)
    dtype = torch.float16 if amp else torch.float32
    inputs = []
    for size, _ in stages:
        x = torch.randn(size, device=device, dtype=dtype)
        inputs.append(x.contiguous(memory_format=torch.channels_last) if channels_last
                      else x)
    results = []
    for variant in variants:
        walls, host_bound, kernels = [], [], [] if device.type == 'cuda' else None
        for (size, _), x in zip(stages, inputs):
            call = module_call(build_module(variant, size[1], device, batch_stats), x,
                               mode, amp)
            us, bound = device_bound_us(call, device, iters)
            walls.append(us)
            host_bound.append(bound)
            if kernels is not None:
                kernels.append(kernel_us(call))
        row = dict(variant=variant, mode=mode, shapes=[list(s) for s, _ in stages],
                   wall_us=walls, host_bound=host_bound, step_wall_us=_per_step(walls),
                   kernels=None,
                   step_kernel_us=None)
        if kernels is not None:
            names = sorted({name for k in kernels for name in k})
            row['kernels'] = {name: [k.get(name, 0.0) for k in kernels] for name in names}
            row['step_kernel_us'] = _per_step([sum(k.values()) for k in kernels])
        results.append(row)
    return results


def _per_step(per_stage):
    return sum(blocks * v for blocks, v in zip(STAGE_BLOCKS, per_stage))


def format_profile(results, name_width=28):
    """One table per variant: each kernel's microseconds per call at stages 1-4 and per
    step, their sum, and the device-bound wall time."""
    lines = []
    for r in results:
        lines.append(f"{r['variant']} ({r['mode']}), us per call at stages 1-4 | per step")
        rows = []
        if r['kernels'] is not None:
            rows = sorted(r['kernels'].items(), key=lambda kv: -_per_step(kv[1]))
            rows.append(('all kernels', [sum(v[i] for v in r['kernels'].values())
                                         for i in range(len(STAGE_BLOCKS))]))
        rows.append(('wall (device-bound)', r['wall_us']))
        for name, values in rows:
            label = name if len(name) <= name_width else name[:name_width - 3] + '...'
            lines.append(f"  {label:<{name_width}} "
                         + ' / '.join(f'{v:7.1f}' for v in values)
                         + f' | {_per_step(values):8.0f}')
        if any(r['host_bound']) and r['kernels'] is not None:
            stages = ', '.join(str(i + 1) for i, b in enumerate(r['host_bound']) if b)
            lines.append(f'  (stages {stages}: the host was the bound: its time per call '
                         'exceeds the GPU\'s)')
    return '\n'.join(lines)
