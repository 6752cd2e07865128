"""CBAM and SE on CUDA through the Triton kernels: the launch sequences, the autograd
Function, and the entry points :func:`cbam_forward` and :func:`se_forward`.

A detector step on a fast GPU is bound by host time, so a call launches few kernels (CBAM:
4 forward, 5 backward; SE: 2 and 3) through :mod:`.triton_launch`, with one workspace
allocation and no other PyTorch ops. The first call of an input signature and autograd mode
records its launches; later calls replay them from C++ (:mod:`.triton_programs`). The
recordings live in the signature's :class:`~.triton_plan.Plan`, keyed by all that changes a
launch's immediate arguments (BatchNorm's mode, eps and momentum, the conv weight's layout).
"""
import torch

from . import triton_programs
from .cbam_torch import records_grad
from .triton_backward_kernels import (_bwd_desc_reduce, _bwd_dx, _bwd_pixels, _bwd_reduce,
                                      _bwd_spatial, _mlp_bwd)
from .triton_forward_kernels import (_cbam_scale, _pool_mlp, _scale_channels,
                                     _spatial_conv, _spatial_pool)
from .triton_launch import current_stream, launch
from .triton_plan import CONV_BWD_TAPS, plan_for, strides

_counters = {}
_accumulators = {}


def _zeroed_for(cache, x, stream, size, minimum, dtype):
    """A zeroed buffer of at least ``size`` values, kept per device and stream in ``cache``
    (the kernels leave it zeroed after use)."""
    key = (x.get_device(), stream)
    buf = cache.get(key)
    if buf is None or buf.numel() < size:
        buf = cache[key] = torch.zeros(max(size, minimum), dtype=dtype, device=x.device)
    return buf


def _counters_for(x, stream, size):
    """int32 counters for the kernels' last-program-finishes steps."""
    return _zeroed_for(_counters, x, stream, size, 64, torch.int32)


def _accumulators_for(x, stream, size):
    """float32 accumulators for the pooling pass's MLP layer (zeroed after use)."""
    return _zeroed_for(_accumulators, x, stream, size, 1024, torch.float32)


def _channel_map(plan, stream, counters, x, ws, w1, b1, w2, b2, zero_grads, launch=launch):
    """Pooling and the MLP (where ``plan.direct``, only its first layer: the next pass
    runs the second)."""
    acc = _accumulators_for(x, stream, plan.n * 2 * plan.hid)
    launch(_pool_mlp, plan.pool_grid, plan.compiled, ('poolmlp', zero_grads), stream,
           x, ws, counters, acc, w1, b1, w2, b2, *plan.poolmlp_tail[zero_grads],
           plan.stages['_pool_mlp'], num_warps=plan.warps['_pool_mlp'])


def _cbam_passes(plan, stream, x, ws, out, params, bn_state, bn_mode, zero_grads, launch=launch):
    """The forward passes (four launches). ``bn_state``: (running_mean, running_var,
    num_batches_tracked, eps, momentum). bn_mode: 'eval' (running statistics, nothing saved
    for a backward), 'eval_saved' (also z, s and the statistics saved) or 'train' (batch
    statistics, running ones updated, z and s saved)."""
    o, st = plan.ws, plan.st
    w1, b1, w2, b2, conv_w, bn_w, bn_b = params
    rm, rv, nbt, eps, momentum = bn_state
    counters = _counters_for(x, stream, plan.counter_slots)
    _channel_map(plan, stream, counters, x, ws, w1, b1, w2, b2, zero_grads, launch)
    launch(_spatial_pool, plan.sp_grid, plan.compiled, 'spool', stream, x, ws, w2, b2, o['a'],
           o['h'], o['desc'], plan.c, plan.hid, plan.hw, plan.sp_cps, *st, plan.gate_in_pool,
           plan.sp_splits > 1, plan.hid_p, plan.sp_bc, plan.sp_bhw, plan.stages['_spatial_pool'],
           num_warps=plan.warps['_spatial_pool'])
    if rm is None:
        rm = rv = ws
    train = bn_mode == 'train'
    update = train and rm is not ws
    save_z = bn_mode != 'eval'
    w_cl = _weight_channels_last(conv_w)
    launch(_spatial_conv, plan.conv_grid, plan.compiled, ('conv', train, update, save_z, w_cl),
           stream, ws, conv_w, counters, rm, rv, nbt if update else ws, bn_w, bn_b, o['desc'],
           o['z'], o['s'], o['cpart'], o['stats'], plan.n, plan.h, plan.w, eps,
           momentum if update else 0.0, train, update, save_z, plan.k, w_cl, plan.conv_block,
           num_warps=plan.warps['_spatial_conv'])
    launch(_cbam_scale, plan.tile_grid, plan.compiled, ('cscale', train), stream,
           x, ws, out, bn_w, bn_b, o['a'], o['z'], o['stats'], o['s'], plan.c, plan.hw,
           *st, not train, plan.tile_bc, plan.tile_bhw, num_warps=plan.warps['_cbam_scale'])


def _se_passes(plan, stream, x, ws, out, params, zero_grads, launch=launch):
    """The forward passes (two launches)."""
    w1, b1, w2, b2 = params
    counters = _counters_for(x, stream, plan.n)
    _channel_map(plan, stream, counters, x, ws, w1, b1, w2, b2, zero_grads, launch)
    launch(_scale_channels, plan.tile_grid, plan.compiled, 'scale', stream, x, ws, out, w2, b2,
           plan.ws['a'], plan.ws['h'], plan.c, plan.hid, plan.hw, *plan.st, plan.hid_p,
           plan.tile_bc, plan.tile_bhw, num_warps=plan.warps['_scale_channels'])


def _mlp_backward(plan, stream, ws, w1, w2, launch=launch):
    launch(_mlp_bwd, plan.mlp_bwd_grid, plan.compiled, 'mlpbwd', stream, ws, ws, w1, w2,
           *plan.mlpbwd_tail, num_warps=plan.warps['_mlp_bwd'])


def _cbam_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, counters, bn_train,
                          launch=launch):
    """The backward passes (five launches; four where ``dx`` is None)."""
    o, b, st = plan.ws, plan.bws, plan.st
    fc1_w, fc2_w, conv_w, bn_w = params[0], params[2], params[4], params[5]
    launch(_bwd_pixels, plan.pix_grid, plan.compiled, ('bwdpix', extra), stream, g, x, ws, ws,
           counters, o['a'], o['s'], o['z'], o['stats'], b['da'], b['dz'], b['bnpart'], plan.n + 1,
           plan.n, plan.c, plan.hw, plan.pix_cps, *st, *sg, plan.pix_splits > 1, plan.pix_bc,
           plan.pix_bhw, plan.stages['_bwd_pixels'], num_warps=plan.warps['_bwd_pixels'])
    w_cl = _weight_channels_last(conv_w)
    block, grid = plan.conv_bwd[bn_train]
    launch(_bwd_spatial, grid, plan.compiled, ('bwdsp', bn_train, w_cl), stream, ws, ws, conv_w,
           bn_w, o['desc'], o['z'], o['stats'], b['dz'], b['bnpart'], plan.bnpart, b['dconv'],
           b['dbn'], b['ddesc'], plan.n, plan.h, plan.w, bn_train, plan.k, w_cl, CONV_BWD_TAPS, 256,
           block, num_warps=plan.warps['_bwd_spatial'])
    launch(_bwd_desc_reduce, plan.desc_grid, plan.compiled, 'bwddesc', stream,
           x, ws, ws, o['a'], o['desc'], b['da'], b['ddesc'], plan.c, plan.hw, *st,
           plan.desc_hw_per_prog, plan.desc_bc, plan.desc_bhw,
           plan.stages['_bwd_desc_reduce'], num_warps=plan.warps['_bwd_desc_reduce'])
    _mlp_backward(plan, stream, ws, fc1_w, fc2_w, launch)
    if dx is not None:
        launch(_bwd_dx, plan.dx_grid, plan.compiled, ('dx', extra), stream,
               g, x, ws, ws, dx, o['a'], o['s'], o['desc'], o['pooled'], b['ddesc'],
               b['dpooled'], plan.c, plan.hw, *st, *sg, True, plan.tile_bc, plan.tile_bhw,
               plan.dx_tiles, plan.stages['_bwd_dx'], num_warps=plan.warps['_bwd_dx'])


def _se_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, launch=launch):
    """The backward passes (three launches; two where ``dx`` is None)."""
    o, b, st = plan.ws, plan.bws, plan.st
    launch(_bwd_reduce, plan.red_grid, plan.compiled, ('bwdred', extra), stream, g, x, ws, b['da'],
           plan.c, plan.hw, *st, *sg, plan.red_hw_per_prog, plan.tile_bc, plan.tile_bhw,
           plan.stages['_bwd_reduce'], num_warps=plan.warps['_bwd_reduce'])
    _mlp_backward(plan, stream, ws, params[0], params[2], launch)
    if dx is not None:
        launch(_bwd_dx, plan.dx_grid, plan.compiled, ('dx', extra), stream,
               g, x, ws, ws, dx, o['a'], 0, 0, o['pooled'], 0, b['dpooled'], plan.c,
               plan.hw, *st, *sg, False, plan.tile_bc, plan.tile_bhw, plan.dx_tiles,
               plan.stages['_bwd_dx'], num_warps=plan.warps['_bwd_dx'])


def _param_grads(plan, ws, needs, params):
    """The parameters' gradients in the workspace, each laid out as its parameter."""
    grads = ws.split_with_sizes(plan.split_sizes)[1:-1]
    return [(g.as_strided(shape, p.stride()) if len(shape) > 1 else g) if need else None
            for g, shape, need, p in zip(grads, plan.grad_shapes, needs, params)]


class _AttentionFunction(torch.autograd.Function):
    """CBAM (``bn_state`` given) or SE through the Triton passes, run from Python; with a
    ``native_key``, recorded for the C++ autograd node to run the key's later calls."""

    @staticmethod
    def forward(ctx, x, *inputs):
        *params, plan, bn_state, bn_train, rest, native_key = inputs
        cbam = bn_state is not None
        ws = torch.empty(plan.total_size, device=x.device, dtype=torch.float32)
        out = torch.empty_like(x)
        stream = current_stream(x.get_device())
        recorder = triton_programs.Recorder() if native_key is not None else None
        run = recorder or launch
        if cbam:
            bn_mode = 'train' if bn_train else 'eval_saved'
            _cbam_passes(plan, stream, x, ws, out, params, bn_state, bn_mode, True, run)
        else:
            _se_passes(plan, stream, x, ws, out, params, True, run)
        ctx.save_for_backward(x, ws, *params)
        ctx.plan, ctx.cbam, ctx.bn_train, ctx.backward_done = plan, cbam, bn_train, False
        ctx.rest, ctx.native_key, ctx.forward_program = rest, native_key, None
        if recorder is not None:
            ctx.forward_program = recorder.program([x, ws, out, *params, *rest])
            if ctx.forward_program is None:
                plan.native[native_key] = None  # not replayable: stay in Python
        return out

    @staticmethod
    def backward(ctx, g):
        x, ws, *params = ctx.saved_tensors
        plan = ctx.plan
        if ctx.backward_done:  # run backward again (retain_graph): zero the accumulators
            for start, size in plan.atomic_regions:
                ws.narrow(0, start, size).zero_()
        ctx.backward_done = True
        sg = strides(g)
        if sg is None:
            g = g.contiguous()
            sg = strides(g)
        extra = (sg, g.dtype, g.data_ptr() % 16 == 0)
        stream = current_stream(g.get_device())
        needs = ctx.needs_input_grad
        dx = torch.empty_like(x) if needs[0] else None
        # recorded once per key (a state the C++ node runs is never replaced), where it would
        # launch the same kernels: the gradient laid out as x and aligned, dx computed
        record = (ctx.forward_program is not None and ctx.native_key not in plan.native
                  and dx is not None and sg == plan.st and g.dtype == x.dtype and extra[2]
                  and x.stride() == dx.stride())
        recorder = triton_programs.Recorder() if record else None
        run = recorder or launch
        if ctx.cbam:
            counters = ctx.rest[3]
            _cbam_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, counters,
                                  ctx.bn_train, run)
        else:
            _se_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, run)
        if recorder is not None:
            backward = recorder.program([g, x, ws, dx, *params, *ctx.rest])
            plan.native[ctx.native_key] = None if backward is None else \
                triton_programs.train_state(ctx.forward_program, backward, plan, params)
        return (dx, *_param_grads(plan, ws, needs[1:1 + len(params)], params),
                None, None, None, None, None)


def _weight_channels_last(w):
    """Whether the kernels read (and write the gradient of) the convolution's weight
    channels_last, as ``model.to(memory_format=torch.channels_last)`` lays it out."""
    return not w.is_contiguous()


def _params_ready(params, laid_out=()):
    """The kernels read the weights as 16-byte aligned float32, contiguous, or for the
    indices in ``laid_out`` contiguous or channels_last."""
    for i, p in enumerate(params):
        if p is None or p.dtype is not torch.float32 or p.data_ptr() % 16:
            return False
        if not (p.is_contiguous() or i in laid_out
                and p.is_contiguous(memory_format=torch.channels_last)):
            return False
    return True


def _run(plan, x, stream, params, bn_state, bn_train, rest, key_extra, passes):
    """One call on ``plan``: the C++ replay of its recorded program where there is one,
    else the Python passes (``passes(stream, ws, out, launch)``), recording them."""
    native = triton_programs.enabled()
    if triton_programs.not_built():
        from .extensions import warn_not_built
        warn_not_built('_triton_programs', 'the Triton kernels are launched from Python, '
                       'with more host time per call')
    if records_grad(x, params):
        key = ('train', bn_train) + key_extra
        state = plan.native.get(key) if native else None
        if state is not None:
            return triton_programs.train(state, x, list(params), stream, rest)
        return _AttentionFunction.apply(x, *params, plan, bn_state, bn_train, rest,
                                        key if native and key not in plan.native else None)
    key = ('infer', bn_train) + key_extra
    program = plan.native.get(key) if native else None
    if program is not None:
        return triton_programs.infer(program, x, plan.ws_size, stream, [*params, *rest])
    out = torch.empty_like(x)
    ws = torch.empty(plan.ws_size, device=x.device, dtype=torch.float32)
    if native and key not in plan.native:
        recorder = triton_programs.Recorder()
        passes(stream, ws, out, recorder)
        plan.native[key] = recorder.program([x, ws, out, *params, *rest])
    else:
        passes(stream, ws, out, launch)
    return out


def cbam_forward(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight, bn_weight, bn_bias,
                 running_mean, running_var, num_batches_tracked, bn_training, momentum, eps):
    """CBAM with the default options (:func:`cbam_mmdet.ops.cbam`), or None where these
    kernels do not take the call."""
    params = (fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight, bn_weight, bn_bias)
    if not _params_ready(params, laid_out=(4,)) or (bn_training and momentum is None):
        return None
    if strides(x) is None:
        x = x.contiguous()
    plan = plan_for('cbam', x, fc1_weight.shape[0], conv_weight.shape[-1])
    if bn_training and plan.n * plan.hw < 2:
        return None  # BatchNorm's own error for one value per channel
    stream = current_stream(x.get_device())
    # the other tensors a recorded program may name (x stands in for absent buffers)
    rm, rv, nbt = running_mean, running_var, num_batches_tracked
    rest = [x if rm is None else rm, x if rv is None else rv, x if nbt is None else nbt,
            _counters_for(x, stream, plan.counter_slots),
            _accumulators_for(x, stream, plan.n * 2 * plan.hid)]
    bn_state = (rm, rv, nbt, eps, momentum)
    key_extra = ('cbam', rm is None, nbt is None, eps, momentum, _weight_channels_last(conv_weight))
    return _run(plan, x, stream, params, bn_state, bn_training, rest, key_extra,
                lambda stream, ws, out, run: _cbam_passes(
                    plan, stream, x, ws, out, params, bn_state,
                    'train' if bn_training else 'eval', False, run))


def se_forward(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """SE (:func:`cbam_mmdet.ops.se`), or None where these kernels do not take the call."""
    params = (fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    if not _params_ready(params):
        return None
    if strides(x) is None:
        x = x.contiguous()
    plan = plan_for('se', x, fc1_weight.shape[0], 0)
    stream = current_stream(x.get_device())
    rest = [_counters_for(x, stream, plan.n), _accumulators_for(x, stream, plan.n * 2 * plan.hid)]
    return _run(plan, x, stream, params, None, False, rest, ('se',),
                lambda stream, ws, out, run: _se_passes(
                    plan, stream, x, ws, out, params, False, run))
