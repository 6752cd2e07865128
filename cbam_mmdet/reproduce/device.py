"""The device a comparison trains on. ``--device auto`` takes the GPU where torch sees one
and mmcv was compiled with its CUDA ops (RoIAlign, NMS: without them training fails there),
else the CPU; ``--amp`` (fp16 mixed precision) applies on the GPU only."""
DEVICES = ('auto', 'cpu', 'cuda')
REBUILD_HINT = 'rebuild it with bash tools/setup_env.sh on this machine'


def mmcv_has_cuda_ops():
    """Whether the installed mmcv runs RoIAlign on a CUDA tensor (a CPU-only build raises;
    mmcv's ``get_compiling_cuda_version`` can crash the process on a CUDA build)."""
    import torch
    try:
        from mmcv.ops import roi_align
        x = torch.zeros(1, 1, 4, 4, device='cuda')
        roi_align(x, torch.tensor([[0., 0., 0., 2., 2.]], device='cuda'), (1, 1))
    except (ImportError, RuntimeError):
        return False
    return True


def choose_device(requested='auto', amp=False):
    """``(device, amp, name, note)``: ``'cuda'`` or ``'cpu'`` for ``requested`` (one of
    :data:`DEVICES`), whether fp16 AMP runs, the name comparison.md gives it (``'cpu'``,
    ``'cuda (<GPU>, fp16 AMP)'``) and why a GPU or ``amp`` goes unused (else ``''``).
    ValueError where the request cannot run: ``'cuda'`` without a GPU or mmcv's CUDA ops,
    ``amp`` with ``'cpu'``."""
    import torch
    if requested not in DEVICES:
        raise ValueError(f'--device: {requested!r} is not one of {list(DEVICES)}')
    gpu = torch.cuda.is_available()
    usable = gpu and mmcv_has_cuda_ops()
    if requested == 'cuda' and not usable:
        raise ValueError('--device cuda: ' + ('no CUDA device is available' if not gpu else
                         f'mmcv was compiled without its CUDA ops; {REBUILD_HINT}'))
    if requested == 'cpu' and amp:
        raise ValueError('--amp: fp16 mixed precision runs on CUDA only, not with --device cpu')
    if requested == 'cpu' or not usable:
        note = ([f'a GPU is present but mmcv has no CUDA ops; {REBUILD_HINT}'] * gpu
                + ['--amp applies on CUDA only: fp32'] * bool(amp))
        return 'cpu', False, 'cpu', '; '.join(note)
    name = f'cuda ({torch.cuda.get_device_name()}, {"fp16 AMP" if amp else "fp32"})'
    return 'cuda', bool(amp), name, ''
