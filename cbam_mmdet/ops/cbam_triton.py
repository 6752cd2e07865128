"""Fused Triton kernels for CBAM and SE on CUDA, forward and backward.

A detector step on a fast GPU is bound by host time (docs/speed.md), so these paths are
built to launch few kernels, each through :mod:`.triton_launch` (about 5 us of host time
instead of 15-40 us for ``kernel[grid]``), with one workspace allocation per call and no
other PyTorch ops. The first call of an input signature runs the passes below from
Python and records their launches; later calls replay the recording from C++
(:mod:`.triton_programs`: inference in one call, training as a C++ autograd Function):

- CBAM forward: ``_pool_mlp`` (avg and max over H, W and the shared MLP's first layer:
  for large MLPs, and over large maps in one-channel programs, every program adds
  ``W1[:, its channels]`` times its channels' pooled values into a per-sample
  accumulator; else the last program of each sample runs the MLP from the programs'
  partials; that program also forms ``M_c``, except after a direct pass that was not
  over a large map, and zeroes the backward's accumulators), ``_spatial_pool``
  (``M_c`` for the channels each program reads, by the MLP's second layer where the
  pooling pass left it, then [max; mean] over C of ``M_c F``, never stored),
  ``_spatial_conv`` (the 7x7 convolution; with BatchNorm in running statistics also
  BatchNorm and the sigmoid, ``M_s``; in training mode per-block statistics, which the
  last program combines per Chan et al., updating the running statistics) and
  ``_cbam_scale`` (``out = F M_c M_s`` over tiles of channels x pixels, forming ``M_s``
  from the batch statistics in training mode): four launches.
- CBAM backward: ``_bwd_pixels`` (``dL/dM_s`` per pixel and the output's share of
  ``dL/dM_c``), ``_bwd_spatial`` (BatchNorm and convolution backward, on the small maps),
  ``_bwd_desc_reduce`` (the descriptor's share of ``dL/dM_c``, over tiles), ``_mlp_bwd``
  (the MLP's weight gradients and ``dL/d pooled``), ``_bwd_dx`` (``dL/dF``): five
  launches. Parameter gradients are views of the workspace.
- SE: ``_pool_mlp``, ``_scale_channels`` (with the MLP's second layer) forward;
  ``_bwd_reduce``, ``_mlp_bwd``, ``_bwd_dx`` backward.

Passes that reduce over channels (``_spatial_pool``, the backward's ``_bwd_pixels``) run
over blocks of pixels and own all channels of their pixels; where
the pixels are few (ResNet's late stages) the channels are split over programs too, and
sums and maxima over channels are combined by atomics (:func:`_channel_split`).

"Last program to finish" steps count finished programs in an int32 counter per device
and stream (reset by the last program), after a barrier so that every thread's partial
results are written first. The counters' atomics are acquire-release; every other
atomic only accumulates and is relaxed (Triton's default, acquire-release, makes each
one wait for the thread's earlier memory accesses): ordered by the launch boundary, or
before a last-program step by the barrier and the counter's atomic.

The big feature map ``F`` (N, C, H, W) is read three times and written once by the CBAM
forward (the floor), read twice and written once by SE's. Kernels read any strides
where H and W merge into one axis (contiguous NCHW and channels_last), accumulate in
float32, and write ``F``'s dtype; the small maps are float32.

Maxima: the gradient of a max goes to every element equal to it (the reference gives it
to one element or splits it between ties; ties have probability zero for real-valued
activations).
"""
import collections

import torch
import triton
import triton.language as tl

from . import triton_programs
from .triton_launch import current_stream, launch

# ---- kernels ---------------------------------------------------------------------------


@triton.jit
def _hidden(ws_ptr, b1_ptr, n, h_avg, h_max, offs_j, mask_j, OFF_HPRE, OFF_H, HID,
            PAIR: tl.constexpr):
    """Store hpre[n] = (W1 avg + b1, W1 max + b1) and h[n] = relu(hpre_avg) +
    relu(hpre_max) (PAIR, CBAM) or relu(hpre_avg) (SE)."""
    b1 = tl.load(b1_ptr + offs_j, mask=mask_j, other=0.0)
    hpre = ws_ptr + OFF_HPRE + n * 2 * HID + offs_j
    tl.store(hpre, h_avg + b1, mask=mask_j)
    h = tl.maximum(h_avg + b1, 0.0)
    if PAIR:
        tl.store(hpre + HID, h_max + b1, mask=mask_j)
        h += tl.maximum(h_max + b1, 0.0)
    tl.store(ws_ptr + OFF_H + n * HID + offs_j, h, mask=mask_j)


@triton.jit
def _mlp_sample(ws_ptr, w1_ptr, b1_ptr, n, OFF_PART, OFF_POOLED, OFF_HPRE, OFF_H,
                N, C, HID, HW, SPLIT,
                PAIR: tl.constexpr, HID_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """For sample n, from the partials over SPLIT spans of H x W: pooled[n] = (avg, max)
    and the shared MLP's first layer (:func:`_hidden`)."""
    offs_j = tl.arange(0, HID_P)
    mask_j = offs_j < HID
    h_avg = tl.zeros((HID_P,), dtype=tl.float32)
    h_max = tl.zeros((HID_P,), dtype=tl.float32)
    pooled = ws_ptr + OFF_POOLED + n * 2 * C
    for start in range(0, C, BLOCK_C):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        d_sum = tl.zeros((BLOCK_C,), dtype=tl.float32)
        d_max = tl.full((BLOCK_C,), float('-inf'), dtype=tl.float32)
        for k in range(0, SPLIT):
            p = ws_ptr + OFF_PART + k * 2 * N * C + n * C + offs_c
            d_sum += tl.load(p, mask=mask_c, other=0.0, cache_modifier='.cg')
            if PAIR:
                d_max = tl.maximum(d_max, tl.load(p + N * C, mask=mask_c, other=0.0,
                                                  cache_modifier='.cg'))
        d_avg = d_sum / HW
        tl.store(pooled + offs_c, d_avg, mask=mask_c)
        w1 = tl.load(w1_ptr + offs_j[:, None] * C + offs_c[None, :],
                     mask=mask_j[:, None] & mask_c[None, :], other=0.0)
        h_avg += tl.sum(w1 * d_avg[None, :], axis=1)
        if PAIR:
            d_max = tl.where(mask_c, d_max, 0.0)
            tl.store(pooled + C + offs_c, d_max, mask=mask_c)
            h_max += tl.sum(w1 * d_max[None, :], axis=1)
    _hidden(ws_ptr, b1_ptr, n, h_avg, h_max, offs_j, mask_j, OFF_HPRE, OFF_H, HID, PAIR)


@triton.jit
def _channel_gate(ws_ptr, w2_ptr, b2_ptr, OFF_H, n, offs_c, mask_c, HID,
                  PAIR: tl.constexpr, HID_P: tl.constexpr):
    """a[n, c] at the channels offs_c: sigmoid(W2 h[n] + 2 b2) (PAIR: the MLP's second
    layer applied to both pooled descriptors and summed) or sigmoid(W2 h[n] + b2)."""
    offs_j = tl.arange(0, HID_P)
    mask_j = offs_j < HID
    h = tl.load(ws_ptr + OFF_H + n * HID + offs_j, mask=mask_j, other=0.0)
    w2 = tl.load(w2_ptr + offs_c[:, None] * HID + offs_j[None, :],
                 mask=mask_c[:, None] & mask_j[None, :], other=0.0)
    b2 = tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0)
    return tl.sigmoid(tl.sum(w2 * h[None, :], axis=1) + (2.0 * b2 if PAIR else b2))


@triton.jit
def _channel_span(C, CPS):
    """(sample n, channel split, first channel, end of its channels) of a program whose
    grid axis 0 runs over the samples x the splits of CPS channels each."""
    num_cs = tl.cdiv(C, CPS)
    cs = tl.program_id(0) % num_cs
    c_begin = cs * CPS
    return tl.program_id(0) // num_cs, cs, c_begin, tl.minimum(C, c_begin + CPS)


@triton.jit
def _zero(ptr, size, BLOCK: tl.constexpr):
    for start in range(0, size, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        tl.store(ptr + offs, tl.zeros((BLOCK,), dtype=tl.float32), mask=offs < size)


@triton.jit
def _pool_mlp(x_ptr, ws_ptr, cnt_ptr, acc_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, OFF_PART,
              OFF_A, OFF_POOLED, OFF_HPRE, OFF_H, OFF_DESC, B_DA, B_DPOOLED, B_DCONV,
              DCONV_SIZE, B_DS, N, C, HID, HW, sxn, sxc, sxhw, hw_per_prog,
              PAIR: tl.constexpr, DIRECT: tl.constexpr, ZERO_GRADS: tl.constexpr,
              INIT_DESC: tl.constexpr, ZERO_DS: tl.constexpr, HID_P: tl.constexpr,
              MLP_BLOCK_C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
              GATE: tl.constexpr, STAGES: tl.constexpr):
    """avg and max of x over H x W and the shared MLP's first layer.

    DIRECT (one program covers all of H x W for its channels): the program stores its
    channels' pooled values and adds W1[:, its channels] (avg, max) into the per-sample
    accumulator ``acc`` (zero between calls); else it stores partials over its span of
    H x W and the MLP's first layer runs in the last program of the sample
    (:func:`_mlp_sample`). The last program of sample n to finish (a counter per sample,
    reset after use) stores hpre[n] and h[n] (:func:`_hidden`); with GATE (CBAM, where
    the pass is not direct or runs over a large map) also a[n] = M_c by
    :func:`_channel_gate` (else the next pass computes it per program); and it prepares
    the later passes: zeroes the backward's atomic accumulators of sample n (ZERO_GRADS;
    the convolution's with n == 0; the pixels' dL/ds with ZERO_DS) and sets the
    descriptor of sample n to (-inf, 0) for atomic maxima and sums (INIT_DESC)."""
    pid_nc = tl.program_id(0)
    pid_hw = tl.program_id(1)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    base = x_ptr + n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
    acc_sum = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    acc_max = tl.full((BLOCK_C, BLOCK_HW), float('-inf'), dtype=tl.float32)
    hw_begin = pid_hw * hw_per_prog
    for step in tl.range(0, hw_per_prog, BLOCK_HW, num_stages=STAGES):
        offs_hw = hw_begin + step + tl.arange(0, BLOCK_HW)
        mask = mask_c[:, None] & (offs_hw[None, :] < HW)
        v = tl.load(base + offs_hw[None, :].to(tl.int64) * sxhw, mask=mask,
                    other=0.0).to(tl.float32)
        acc_sum += v
        if PAIR:
            acc_max = tl.maximum(acc_max, tl.where(mask, v, float('-inf')))
    offs_j = tl.arange(0, HID_P)
    mask_j = offs_j < HID
    if DIRECT:
        avg = tl.sum(acc_sum, axis=1) / HW
        pooled = ws_ptr + OFF_POOLED + n * 2 * C + offs_c
        tl.store(pooled, avg, mask=mask_c)
        w1 = tl.load(w1_ptr + offs_j[:, None] * C + offs_c[None, :],
                     mask=mask_j[:, None] & mask_c[None, :], other=0.0)
        acc = acc_ptr + n * 2 * HID + offs_j
        tl.atomic_add(acc, tl.sum(w1 * avg[None, :], axis=1), mask=mask_j, sem='relaxed')
        if PAIR:
            mx = tl.where(mask_c, tl.max(acc_max, axis=1), 0.0)
            tl.store(pooled + C, mx, mask=mask_c)
            tl.atomic_add(acc + HID, tl.sum(w1 * mx[None, :], axis=1), mask=mask_j,
                          sem='relaxed')
    else:
        out = ws_ptr + OFF_PART + pid_hw * 2 * N * C + n * C + offs_c
        tl.store(out, tl.sum(acc_sum, axis=1), mask=mask_c)
        if PAIR:
            tl.store(out + N * C, tl.max(acc_max, axis=1), mask=mask_c)
    tl.debug_barrier()  # every thread's results are written before the counter moves
    done = tl.atomic_add(cnt_ptr + n, 1, sem='acq_rel')
    if done == num_cb * tl.num_programs(1) - 1:
        if DIRECT:
            acc = acc_ptr + n * 2 * HID + offs_j
            h_avg = tl.load(acc, mask=mask_j, other=0.0, cache_modifier='.cg')
            h_max = h_avg
            if PAIR:
                h_max = tl.load(acc + HID, mask=mask_j, other=0.0, cache_modifier='.cg')
            _zero(acc_ptr + n * 2 * HID, 2 * HID, 256)
            _hidden(ws_ptr, b1_ptr, n, h_avg, h_max, offs_j, mask_j, OFF_HPRE, OFF_H, HID,
                    PAIR)
        else:
            _mlp_sample(ws_ptr, w1_ptr, b1_ptr, n, OFF_PART, OFF_POOLED, OFF_HPRE, OFF_H,
                        N, C, HID, HW, tl.num_programs(1), PAIR, HID_P, MLP_BLOCK_C)
        if GATE:  # CBAM: the gate here (else the next pass computes it per program)
            tl.debug_barrier()  # h[n] is written before it is read
            for c0 in range(0, C, MLP_BLOCK_C):
                oc = c0 + tl.arange(0, MLP_BLOCK_C)
                mc = oc < C
                tl.store(ws_ptr + OFF_A + n * C + oc,
                         _channel_gate(ws_ptr, w2_ptr, b2_ptr, OFF_H, n, oc, mc, HID,
                                       PAIR, HID_P), mask=mc)
        if ZERO_GRADS:
            _zero(ws_ptr + B_DA + n * C, C, 1024)
            _zero(ws_ptr + B_DPOOLED + n * 2 * C, 2 * C, 1024)
            if n == 0:
                _zero(ws_ptr + B_DCONV, DCONV_SIZE, 128)
            if ZERO_DS:
                _zero(ws_ptr + B_DS + n * HW, HW, 1024)
        if INIT_DESC:
            for start in range(0, HW, 1024):
                offs = start + tl.arange(0, 1024)
                m = offs < HW
                d = ws_ptr + OFF_DESC + n * 2 * HW + offs
                tl.store(d, tl.full((1024,), float('-inf'), dtype=tl.float32), mask=m)
                tl.store(d + HW, tl.zeros((1024,), dtype=tl.float32), mask=m)
        tl.store(cnt_ptr + n, 0)


@triton.jit
def _spatial_pool(x_ptr, ws_ptr, w2_ptr, b2_ptr, OFF_A, OFF_H, OFF_DESC, C, HID, HW, CPS,
                  sxn, sxc, sxhw, A_READY: tl.constexpr, ATOMIC: tl.constexpr,
                  HID_P: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, STAGES: tl.constexpr):
    """a[n, c] = M_c (A_READY: computed by :func:`_pool_mlp`; else here, by
    :func:`_channel_gate`, and stored by the programs of the first pixel block), then
    desc[n, 0, hw] = max_c a[n, c] x[n, c, hw] and desc[n, 1, hw] = mean_c of the same,
    over the program's CPS channels: stored, or with ATOMIC (channels split over
    programs) an atomic max and sum into the descriptor set by :func:`_pool_mlp`."""
    n, _, c_begin, c_end = _channel_span(C, CPS)
    store_a = tl.program_id(1) == 0
    offs_hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_hw = offs_hw < HW
    base = x_ptr + n.to(tl.int64) * sxn + offs_hw[None, :].to(tl.int64) * sxhw
    acc_sum = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    acc_max = tl.full((BLOCK_C, BLOCK_HW), float('-inf'), dtype=tl.float32)
    for start in tl.range(c_begin, c_end, BLOCK_C, num_stages=STAGES):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < c_end
        mask = mask_c[:, None] & mask_hw[None, :]
        if A_READY:
            a = tl.load(ws_ptr + OFF_A + n * C + offs_c, mask=mask_c, other=0.0)
        else:
            a = _channel_gate(ws_ptr, w2_ptr, b2_ptr, OFF_H, n, offs_c, mask_c, HID, True,
                              HID_P)
            tl.store(ws_ptr + OFF_A + n * C + offs_c, a, mask=mask_c & store_a)
        y = tl.load(base + offs_c[:, None].to(tl.int64) * sxc, mask=mask,
                    other=0.0).to(tl.float32) * a[:, None]
        acc_sum += y
        acc_max = tl.maximum(acc_max, tl.where(mask, y, float('-inf')))
    out = ws_ptr + OFF_DESC + n * 2 * HW + offs_hw
    if ATOMIC:
        tl.atomic_max(out, tl.max(acc_max, axis=0), mask=mask_hw, sem='relaxed')
        tl.atomic_add(out + HW, tl.sum(acc_sum, axis=0) / C, mask=mask_hw, sem='relaxed')
    else:
        tl.store(out, tl.max(acc_max, axis=0), mask=mask_hw)
        tl.store(out + HW, tl.sum(acc_sum, axis=0) / C, mask=mask_hw)


@triton.jit
def _bn_stats(ws_ptr, rm_ptr, rv_ptr, nbt_ptr, OFF_CPART, P, OFF_STATS, eps, momentum,
              UPDATE: tl.constexpr, BLOCK: tl.constexpr):
    """stats = (mean, 1 / sqrt(var + eps)) of the batch, combined from the blocks'
    (count, mean, M2) as in Chan et al.; the running statistics updated when UPDATE, with
    the unbiased variance, as BatchNorm does."""
    offs = tl.arange(0, BLOCK)
    acc_c = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_cm = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, P, BLOCK):
        o = start + offs
        m = o < P
        c = tl.load(ws_ptr + OFF_CPART + o * 3, mask=m, other=0.0, cache_modifier='.cg')
        acc_c += c
        acc_cm += c * tl.load(ws_ptr + OFF_CPART + o * 3 + 1, mask=m, other=0.0,
                              cache_modifier='.cg')
    count = tl.sum(acc_c, axis=0)
    mean = tl.sum(acc_cm, axis=0) / count
    acc_m2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, P, BLOCK):
        o = start + offs
        m = o < P
        c = tl.load(ws_ptr + OFF_CPART + o * 3, mask=m, other=0.0, cache_modifier='.cg')
        d = tl.load(ws_ptr + OFF_CPART + o * 3 + 1, mask=m, other=0.0,
                    cache_modifier='.cg') - mean
        acc_m2 += tl.load(ws_ptr + OFF_CPART + o * 3 + 2, mask=m, other=0.0,
                          cache_modifier='.cg') + c * d * d
    m2 = tl.sum(acc_m2, axis=0)
    var = m2 / count
    if UPDATE:
        rm = tl.load(rm_ptr)
        rv = tl.load(rv_ptr)
        tl.store(rm_ptr, (1.0 - momentum) * rm + momentum * mean)
        tl.store(rv_ptr, (1.0 - momentum) * rv + momentum * (m2 / (count - 1.0)))
        tl.store(nbt_ptr, tl.load(nbt_ptr) + 1)
    tl.store(ws_ptr + OFF_STATS, mean)
    tl.store(ws_ptr + OFF_STATS + 1, 1.0 / tl.sqrt(var + eps))


@triton.jit
def _conv_tap(ch, ky, kx, K: tl.constexpr, W_CL: tl.constexpr):
    """The offset of the (1, 2, K, K) weight's element [0, ch, ky, kx]: contiguous, or
    channels_last (W_CL: the two channels of a tap side by side)."""
    if W_CL:
        return (ky * K + kx) * 2 + ch
    return (ch * K + ky) * K + kx


@triton.jit
def _conv_desc(ws_ptr, w_ptr, OFF_DESC, n, offs, mask, H, W, K: tl.constexpr,
               W_CL: tl.constexpr, BLOCK: tl.constexpr):
    """conv_KxK(desc[n]) (no bias, zero padding) at the pixels ``offs``."""
    HW = H * W
    yy0 = offs // W
    xx0 = offs % W
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for ch in tl.static_range(2):
        base = ws_ptr + OFF_DESC + (n * 2 + ch) * HW
        for ky in tl.static_range(K):
            yy = yy0 + (ky - K // 2)
            row_ok = mask & (yy >= 0) & (yy < H)
            for kx in tl.static_range(K):
                xx = xx0 + (kx - K // 2)
                ok = row_ok & (xx >= 0) & (xx < W)
                wv = tl.load(w_ptr + _conv_tap(ch, ky, kx, K, W_CL))
                acc += wv * tl.load(base + yy * W + xx, mask=ok, other=0.0)
    return acc


@triton.jit
def _spatial_conv(ws_ptr, w_ptr, cnt_ptr, rm_ptr, rv_ptr, nbt_ptr, bw_ptr, bb_ptr, OFF_DESC,
                  OFF_Z, OFF_S, OFF_CPART, OFF_STATS, SLOT, H, W, eps, momentum,
                  TRAIN: tl.constexpr, UPDATE: tl.constexpr, SAVE_Z: tl.constexpr,
                  K: tl.constexpr, W_CL: tl.constexpr, BLOCK: tl.constexpr):
    """z[n, hw] = conv_KxK(desc[n]) (no bias). BatchNorm in running statistics (not
    TRAIN): s = sigmoid(BN(z)) is stored here, and with SAVE_Z also z and the statistics
    (mean, 1 / std) for a backward. TRAIN (batch statistics): this block's (count, mean,
    M2) of z are stored with z and the last program to finish (counter SLOT, reset after
    use) computes the statistics (:func:`_bn_stats`); :func:`_cbam_scale` then forms s."""
    n = tl.program_id(0)
    pid = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    HW = H * W
    mask = offs < HW
    acc = _conv_desc(ws_ptr, w_ptr, OFF_DESC, n, offs, mask, H, W, K, W_CL, BLOCK)
    if not TRAIN:
        mean = tl.load(rm_ptr)
        rstd = 1.0 / tl.sqrt(tl.load(rv_ptr) + eps)
        t = (acc - mean) * rstd * tl.load(bw_ptr) + tl.load(bb_ptr)
        tl.store(ws_ptr + OFF_S + n * HW + offs, tl.sigmoid(t), mask=mask)
        if SAVE_Z:
            tl.store(ws_ptr + OFF_Z + n * HW + offs, acc, mask=mask)
            first = (n == 0) & (pid == 0)
            tl.store(ws_ptr + OFF_STATS, mean, mask=first)
            tl.store(ws_ptr + OFF_STATS + 1, rstd, mask=first)
    else:
        tl.store(ws_ptr + OFF_Z + n * HW + offs, acc, mask=mask)
        cnt = tl.sum(mask.to(tl.float32), axis=0)
        mean = tl.sum(tl.where(mask, acc, 0.0), axis=0) / cnt
        dev = tl.where(mask, acc - mean, 0.0)
        part = ws_ptr + OFF_CPART + (n * tl.num_programs(1) + pid) * 3
        tl.store(part, cnt)
        tl.store(part + 1, mean)
        tl.store(part + 2, tl.sum(dev * dev, axis=0))
        tl.debug_barrier()
        done = tl.atomic_add(cnt_ptr + SLOT, 1, sem='acq_rel')
        if done == tl.num_programs(0) * tl.num_programs(1) - 1:
            _bn_stats(ws_ptr, rm_ptr, rv_ptr, nbt_ptr, OFF_CPART,
                      tl.num_programs(0) * tl.num_programs(1), OFF_STATS, eps, momentum,
                      UPDATE, 256)
            tl.store(cnt_ptr + SLOT, 0)


@triton.jit
def _cbam_scale(x_ptr, ws_ptr, out_ptr, r_ptr, bw_ptr, bb_ptr, OFF_A, OFF_Z, OFF_STATS,
                OFF_S, C, HW, sxn, sxc, sxhw, S_READY: tl.constexpr, RESIDUAL: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """out[n, c, hw] = x a[n, c] s[n, hw] over one tile (channel block x pixel block), or
    with RESIDUAL the block's tail out = max(x a s + r, 0); s stored by
    :func:`_spatial_conv` (S_READY) or formed here from z and the batch statistics,
    sigmoid((z - mean) / std gamma + beta), and stored by the first channel block. out
    and r have x's strides."""
    pid_nc = tl.program_id(0)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    cb = pid_nc % num_cb
    offs_c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_c = offs_c < C
    mask_hw = offs_hw < HW
    mask = mask_c[:, None] & mask_hw[None, :]
    offs = (n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
            + offs_hw[None, :].to(tl.int64) * sxhw)
    xv = tl.load(x_ptr + offs, mask=mask, other=0.0)
    a = tl.load(ws_ptr + OFF_A + n * C + offs_c, mask=mask_c, other=0.0)
    if S_READY:
        s = tl.load(ws_ptr + OFF_S + n * HW + offs_hw, mask=mask_hw, other=0.0)
    else:
        z = tl.load(ws_ptr + OFF_Z + n * HW + offs_hw, mask=mask_hw, other=0.0)
        t = (z - tl.load(ws_ptr + OFF_STATS)) * tl.load(ws_ptr + OFF_STATS + 1) \
            * tl.load(bw_ptr) + tl.load(bb_ptr)
        s = tl.sigmoid(t)
        tl.store(ws_ptr + OFF_S + n * HW + offs_hw, s, mask=mask_hw & (cb == 0))
    y = xv.to(tl.float32) * a[:, None] * s[None, :]
    if RESIDUAL:
        y = tl.maximum(y + tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32), 0.0)
    tl.store(out_ptr + offs, y.to(xv.dtype), mask=mask)


@triton.jit
def _scale_channels(x_ptr, ws_ptr, out_ptr, r_ptr, w2_ptr, b2_ptr, OFF_A, OFF_H, C, HID, HW,
                    sxn, sxc, sxhw, RESIDUAL: tl.constexpr, HID_P: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """SE: a[n, c] by :func:`_channel_gate` from h[n] (stored by the programs of the
    first pixel block), then out = x a[n, c], or with RESIDUAL the block's tail
    out = max(x a[n, c] + r, 0); out and r have x's strides."""
    pid_nc = tl.program_id(0)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_c = offs_c < C
    mask = mask_c[:, None] & (offs_hw[None, :] < HW)
    offs = (n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
            + offs_hw[None, :].to(tl.int64) * sxhw)
    xv = tl.load(x_ptr + offs, mask=mask, other=0.0)
    a = _channel_gate(ws_ptr, w2_ptr, b2_ptr, OFF_H, n, offs_c, mask_c, HID, False, HID_P)
    tl.store(ws_ptr + OFF_A + n * C + offs_c, a, mask=mask_c & (tl.program_id(1) == 0))
    y = xv.to(tl.float32) * a[:, None]
    if RESIDUAL:
        y = tl.maximum(y + tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32), 0.0)
    tl.store(out_ptr + offs, y.to(xv.dtype), mask=mask)


@triton.jit
def _bwd_pixels(g_ptr, x_ptr, ws_ptr, bws_ptr, cnt_ptr, o_ptr, dr_ptr, OFF_A, OFF_S, OFF_Z,
                OFF_STATS, B_DA, B_DZ, B_BNPART, SLOT, N, C, HW, CPS, sxn, sxc, sxhw, sgn,
                sgc, sghw, ATOMIC: tl.constexpr, RESIDUAL: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, STAGES: tl.constexpr):
    """With p = g x: da[n, c] += sum_hw p s over the program's CPS channels and
    ds = sum_c p a. With RESIDUAL (CBAM's block tail max(x a s + r, 0)) g is taken where
    the saved output o is > 0 and stored as dr (o and dr have x's strides), which the
    dx pass then reads as its g. One channel split (not ATOMIC): ds is complete,
    dz = ds s (1 - s) is stored with the block's (sum dz, sum dz zhat) for BatchNorm's
    backward. ATOMIC: ds is added into the dz region (zeroed by the forward) and the
    last of a pixel block's channel splits to finish (its counter, SLOT + the block's
    index, reset after use) turns the block's ds into dz and stores the block's two
    sums."""
    n, _, c_begin, c_end = _channel_span(C, CPS)
    pid = tl.program_id(1)
    offs_hw = pid * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_hw = offs_hw < HW
    s = tl.load(ws_ptr + OFF_S + n * HW + offs_hw, mask=mask_hw, other=0.0)
    xbase = x_ptr + n.to(tl.int64) * sxn + offs_hw[None, :].to(tl.int64) * sxhw
    gbase = g_ptr + n.to(tl.int64) * sgn + offs_hw[None, :].to(tl.int64) * sghw
    ds = tl.zeros((BLOCK_HW,), dtype=tl.float32)
    for start in tl.range(c_begin, c_end, BLOCK_C, num_stages=STAGES):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < c_end
        mask = mask_c[:, None] & mask_hw[None, :]
        c64 = offs_c[:, None].to(tl.int64)
        xv = tl.load(xbase + c64 * sxc, mask=mask, other=0.0).to(tl.float32)
        gv = tl.load(gbase + c64 * sgc, mask=mask, other=0.0).to(tl.float32)
        if RESIDUAL:
            xoffs = n.to(tl.int64) * sxn + c64 * sxc + offs_hw[None, :].to(tl.int64) * sxhw
            ov = tl.load(o_ptr + xoffs, mask=mask, other=0.0)
            gv = tl.where(ov > 0, gv, 0.0)
            tl.store(dr_ptr + xoffs, gv.to(ov.dtype), mask=mask)
        a = tl.load(ws_ptr + OFF_A + n * C + offs_c, mask=mask_c, other=0.0)
        p = gv * xv
        ds += tl.sum(p * a[:, None], axis=0)
        tl.atomic_add(bws_ptr + B_DA + n * C + offs_c, tl.sum(p * s[None, :], axis=1),
                      mask=mask_c, sem='relaxed')
    mean = tl.load(ws_ptr + OFF_STATS)
    rstd = tl.load(ws_ptr + OFF_STATS + 1)
    if ATOMIC:
        dzb = bws_ptr + B_DZ + n * HW + offs_hw
        tl.atomic_add(dzb, ds, mask=mask_hw, sem='relaxed')
        tl.debug_barrier()
        slot = cnt_ptr + SLOT + n * tl.num_programs(1) + pid
        done = tl.atomic_add(slot, 1, sem='acq_rel')
        if done == tl.num_programs(0) // N - 1:  # the block's last channel split
            dsv = tl.load(dzb, mask=mask_hw, other=0.0, cache_modifier='.cg')
            dz = dsv * s * (1.0 - s)
            tl.store(dzb, dz, mask=mask_hw)
            z = tl.load(ws_ptr + OFF_Z + n * HW + offs_hw, mask=mask_hw, other=0.0)
            zhat = (z - mean) * rstd
            part = bws_ptr + B_BNPART + (n * tl.num_programs(1) + pid) * 2
            tl.store(part, tl.sum(dz, axis=0))
            tl.store(part + 1, tl.sum(tl.where(mask_hw, dz * zhat, 0.0), axis=0))
            tl.store(slot, 0)
    else:
        dz = ds * s * (1.0 - s)
        tl.store(bws_ptr + B_DZ + n * HW + offs_hw, dz, mask=mask_hw)
        z = tl.load(ws_ptr + OFF_Z + n * HW + offs_hw, mask=mask_hw, other=0.0)
        zhat = (z - mean) * rstd
        part = bws_ptr + B_BNPART + (n * tl.num_programs(1) + pid) * 2
        tl.store(part, tl.sum(dz, axis=0))
        tl.store(part + 1, tl.sum(tl.where(mask_hw, dz * zhat, 0.0), axis=0))


@triton.jit
def _bn_part_sums(bws_ptr, B_BNPART, P, BLOCK_P: tl.constexpr):
    """(sum of dz, sum of dz z_hat) over the P blocks' partials."""
    offs_p = tl.arange(0, BLOCK_P)
    acc0 = tl.zeros((BLOCK_P,), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for start in range(0, P, BLOCK_P):
        o = start + offs_p
        m = o < P
        acc0 += tl.load(bws_ptr + B_BNPART + o * 2, mask=m, other=0.0)
        acc1 += tl.load(bws_ptr + B_BNPART + o * 2 + 1, mask=m, other=0.0)
    return tl.sum(acc0, axis=0), tl.sum(acc1, axis=0)


@triton.jit
def _bwd_spatial(ws_ptr, bws_ptr, w_ptr, bw_ptr, OFF_DESC, OFF_Z, OFF_STATS,
                 B_DZ, B_BNPART, P, B_DW, B_DBN, B_DDESC, N, H, W,
                 TRAIN: tl.constexpr, K: tl.constexpr, W_CL: tl.constexpr,
                 TAPS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_HW: tl.constexpr):
    """BatchNorm backward (batch statistics when TRAIN) to dzin, then the convolution's
    backward for this block's pixels: ddesc stored, dW added by atomics (in the weight's
    layout, W_CL: channels_last), TAPS taps of the K x K kernel at a time. Grid: samples
    x blocks of pixels. BatchNorm's sums over the blocks' partials (dL/d gamma, dL/d
    beta) are read by every program when TRAIN (they enter dzin), else by the first
    alone."""
    n = tl.program_id(0)
    pid = tl.program_id(1)
    first = (n == 0) & (pid == 0)
    HW = H * W
    mean = tl.load(ws_ptr + OFF_STATS)
    rstd = tl.load(ws_ptr + OFF_STATS + 1)
    kk = tl.load(bw_ptr) * rstd
    c1 = 0.0
    c2 = 0.0
    if TRAIN:
        sum_dz, sum_dzz = _bn_part_sums(bws_ptr, B_BNPART, P, BLOCK_P)
        if first:
            tl.store(bws_ptr + B_DBN, sum_dzz)  # dL/d gamma
            tl.store(bws_ptr + B_DBN + 1, sum_dz)  # dL/d beta
        count = (N * HW).to(tl.float32)
        c1 = sum_dz / count
        c2 = sum_dzz / count
    elif first:
        sum_dz, sum_dzz = _bn_part_sums(bws_ptr, B_BNPART, P, BLOCK_P)
        tl.store(bws_ptr + B_DBN, sum_dzz)
        tl.store(bws_ptr + B_DBN + 1, sum_dz)
    offs_hw = pid * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_hw = offs_hw < HW
    yy0 = offs_hw // W
    xx0 = offs_hw % W
    zb = ws_ptr + OFF_Z + n * HW
    dzb = bws_ptr + B_DZ + n * HW
    d0 = tl.zeros((BLOCK_HW,), dtype=tl.float32)
    d1 = tl.zeros((BLOCK_HW,), dtype=tl.float32)
    for ky in tl.static_range(K):
        yy = yy0 - (ky - K // 2)
        row_ok = mask_hw & (yy >= 0) & (yy < H)
        for kx in tl.static_range(K):
            xx = xx0 - (kx - K // 2)
            ok = row_ok & (xx >= 0) & (xx < W)
            q = yy * W + xx
            dzq = tl.load(dzb + q, mask=ok, other=0.0)
            if TRAIN:
                zq = tl.load(zb + q, mask=ok, other=0.0)
                dzin = tl.where(ok, kk * (dzq - c1 - (zq - mean) * rstd * c2), 0.0)
            else:  # running statistics: z does not enter (masked loads give 0)
                dzin = kk * dzq
            d0 += tl.load(w_ptr + _conv_tap(0, ky, kx, K, W_CL)) * dzin
            d1 += tl.load(w_ptr + _conv_tap(1, ky, kx, K, W_CL)) * dzin
    ddesc = bws_ptr + B_DDESC + n * 2 * HW + offs_hw
    tl.store(ddesc, d0, mask=mask_hw)
    tl.store(ddesc + HW, d1, mask=mask_hw)
    dzp = tl.load(dzb + offs_hw, mask=mask_hw, other=0.0)
    if TRAIN:
        zp = tl.load(zb + offs_hw, mask=mask_hw, other=0.0)
        dzin_p = tl.where(mask_hw, kk * (dzp - c1 - (zp - mean) * rstd * c2), 0.0)
    else:
        dzin_p = kk * dzp
    for t0 in tl.static_range(0, K * K, TAPS):
        offs_t = t0 + tl.arange(0, TAPS)
        mask_t = offs_t < K * K
        ys = yy0[None, :] + (offs_t // K - K // 2)[:, None]
        xs = xx0[None, :] + (offs_t % K - K // 2)[:, None]
        tap_ok = (mask_t[:, None] & mask_hw[None, :] & (ys >= 0) & (ys < H) & (xs >= 0)
                  & (xs < W))
        q = ys * W + xs
        for ch in tl.static_range(2):
            dv = tl.load(ws_ptr + OFF_DESC + (n * 2 + ch) * HW + q, mask=tap_ok, other=0.0)
            tl.atomic_add(bws_ptr + B_DW + _conv_tap(ch, offs_t // K, offs_t % K, K, W_CL),
                          tl.sum(dv * dzin_p[None, :], axis=1), mask=mask_t, sem='relaxed')


@triton.jit
def _bwd_desc_reduce(x_ptr, ws_ptr, bws_ptr, OFF_A, OFF_DESC, B_DA, B_DDESC, C, HW,
                     sxn, sxc, sxhw, hw_per_prog, BLOCK_C: tl.constexpr,
                     BLOCK_HW: tl.constexpr, STAGES: tl.constexpr):
    """The descriptor's share of dL/da over one channel block and a span of pixels:
    da[n, c] += sum_hw x (ddesc_mean / C + ddesc_max [a x == desc_max]) (one atomic per
    channel and program)."""
    pid_nc = tl.program_id(0)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    a = tl.load(ws_ptr + OFF_A + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
    xbase = x_ptr + n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
    dbase = n * 2 * HW
    acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    hw_begin = tl.program_id(1) * hw_per_prog
    for step in tl.range(0, hw_per_prog, BLOCK_HW, num_stages=STAGES):
        offs_hw = hw_begin + step + tl.arange(0, BLOCK_HW)
        mask_hw = offs_hw < HW
        mask = mask_c[:, None] & mask_hw[None, :]
        xv = tl.load(xbase + offs_hw[None, :].to(tl.int64) * sxhw, mask=mask,
                     other=0.0).to(tl.float32)
        mx = tl.load(ws_ptr + OFF_DESC + dbase + offs_hw, mask=mask_hw, other=0.0)[None, :]
        gmx = tl.load(bws_ptr + B_DDESC + dbase + offs_hw, mask=mask_hw, other=0.0)[None, :]
        gmean = tl.load(bws_ptr + B_DDESC + dbase + HW + offs_hw, mask=mask_hw,
                        other=0.0)[None, :] / C
        acc += tl.where(mask, xv * (gmean + tl.where(xv * a == mx, gmx, 0.0)), 0.0)
    tl.atomic_add(bws_ptr + B_DA + n * C + offs_c, tl.sum(acc, axis=1), mask=mask_c,
                  sem='relaxed')


@triton.jit
def _bwd_reduce(g_ptr, x_ptr, o_ptr, bws_ptr, B_DA, C, HW, sxn, sxc, sxhw, sgn, sgc, sghw,
                hw_per_prog, RESIDUAL: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_HW: tl.constexpr, STAGES: tl.constexpr):
    """SE: da[n, c] += sum over a span of hw of g x; with RESIDUAL (the block's tail
    max(x a + r, 0)) g is taken where the saved output o (x's strides) is > 0."""
    pid_nc = tl.program_id(0)
    pid_hw = tl.program_id(1)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    xbase = x_ptr + n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
    gbase = g_ptr + n.to(tl.int64) * sgn + offs_c[:, None].to(tl.int64) * sgc
    obase = o_ptr + n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
    acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    hw_begin = pid_hw * hw_per_prog
    for step in tl.range(0, hw_per_prog, BLOCK_HW, num_stages=STAGES):
        offs_hw = hw_begin + step + tl.arange(0, BLOCK_HW)
        mask = mask_c[:, None] & (offs_hw[None, :] < HW)
        hw64 = offs_hw[None, :].to(tl.int64)
        xv = tl.load(xbase + hw64 * sxhw, mask=mask, other=0.0).to(tl.float32)
        gv = tl.load(gbase + hw64 * sghw, mask=mask, other=0.0).to(tl.float32)
        if RESIDUAL:
            ov = tl.load(obase + hw64 * sxhw, mask=mask, other=0.0)
            gv = tl.where(ov > 0, gv, 0.0)
        acc += gv * xv
    tl.atomic_add(bws_ptr + B_DA + n * C + offs_c, tl.sum(acc, axis=1), mask=mask_c,
                  sem='relaxed')


@triton.jit
def _logit_grad(ws_ptr, bws_ptr, OFF_A, B_DA, n, C, offs_c, mask_c):
    """dL/d(the MLP's output) of sample n's channels offs_c: dL/da a (1 - a)."""
    av = tl.load(ws_ptr + OFF_A + n * C + offs_c, mask=mask_c, other=0.0)
    return tl.load(bws_ptr + B_DA + n * C + offs_c, mask=mask_c, other=0.0) * av * (1.0 - av)


@triton.jit
def _store_dpre(ws_ptr, bws_ptr, OFF_HPRE, B_DPRE, HID, n, offs_j, mask_j, dh,
                PAIR: tl.constexpr):
    """Stores dL/d hpre of sample n's hidden units offs_j (both branches where PAIR) from
    dL/dh; returns their sum (db1's share)."""
    hpre = ws_ptr + OFF_HPRE + n * 2 * HID + offs_j
    dpre = bws_ptr + B_DPRE + n * 2 * HID + offs_j
    dpa = tl.where(tl.load(hpre, mask=mask_j, other=0.0) > 0.0, dh, 0.0)
    # every channel block of _mlp_bwd computes the same values: any of them may store them
    tl.store(dpre, dpa, mask=mask_j)
    if PAIR:
        dpm = tl.where(tl.load(hpre + HID, mask=mask_j, other=0.0) > 0.0, dh, 0.0)
        tl.store(dpre + HID, dpm, mask=mask_j)
        dpa += dpm
    return dpa


@triton.jit
def _mlp_bwd(ws_ptr, bws_ptr, w1_ptr, w2_ptr, OFF_A, OFF_POOLED, OFF_HPRE, B_DA, B_DPRE,
             B_DW1, B_DB1, B_DW2, B_DB2, B_DPOOLED, N, C, HID, CPB,
             PAIR: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr,
             BLOCK_DH: tl.constexpr):
    """The shared MLP's backward for one block of hidden units (grid axis 0) and CPB
    channels (axis 1): dL/d hpre of the block (every program computes it over all
    channels, BLOCK_DH at a time, two samples per pass over W2's rows; the first channel
    block stores db1), then for its channels the rows of dW2 and columns of dW1, db2
    (first hidden block) and dL/d pooled (atomics over the hidden blocks)."""
    pid = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_j = pid * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_j = offs_j < HID
    first_c = pid_c == 0
    db1 = tl.zeros((BLOCK_J,), dtype=tl.float32)
    # two samples per pass over W2's rows (each row block loaded once for both)
    for n in range(0, N, 2):
        has_n1 = n + 1 < N
        dh0 = tl.zeros((BLOCK_J,), dtype=tl.float32)
        dh1 = tl.zeros((BLOCK_J,), dtype=tl.float32)
        for start in range(0, C, BLOCK_DH):
            offs_c = start + tl.arange(0, BLOCK_DH)
            mask_c = offs_c < C
            mask_c1 = mask_c & has_n1
            w2 = tl.load(w2_ptr + offs_c[:, None] * HID + offs_j[None, :],
                         mask=mask_c[:, None] & mask_j[None, :], other=0.0)
            dl = _logit_grad(ws_ptr, bws_ptr, OFF_A, B_DA, n, C, offs_c, mask_c)
            dh0 += tl.sum(w2 * dl[:, None], axis=0)
            dl = _logit_grad(ws_ptr, bws_ptr, OFF_A, B_DA, n + 1, C, offs_c, mask_c1)
            dh1 += tl.sum(w2 * dl[:, None], axis=0)
        db1 += _store_dpre(ws_ptr, bws_ptr, OFF_HPRE, B_DPRE, HID, n, offs_j, mask_j, dh0,
                           PAIR)
        db1 += _store_dpre(ws_ptr, bws_ptr, OFF_HPRE, B_DPRE, HID, n + 1, offs_j,
                           mask_j & has_n1, dh1, PAIR)
    tl.store(bws_ptr + B_DB1 + offs_j, db1, mask=mask_j & first_c)
    tl.debug_barrier()
    c_begin = pid_c * CPB
    c_end = tl.minimum(C, c_begin + CPB)
    for start in range(c_begin, c_end, BLOCK_C):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < c_end
        mask = mask_c[:, None] & mask_j[None, :]
        w1t = tl.load(w1_ptr + offs_j[None, :] * C + offs_c[:, None], mask=mask, other=0.0)
        dw2 = tl.zeros((BLOCK_C, BLOCK_J), dtype=tl.float32)
        dw1t = tl.zeros((BLOCK_C, BLOCK_J), dtype=tl.float32)
        db2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for n in range(0, N):
            dl = _logit_grad(ws_ptr, bws_ptr, OFF_A, B_DA, n, C, offs_c, mask_c)
            db2 += dl
            hpre = ws_ptr + OFF_HPRE + n * 2 * HID + offs_j
            dpre = bws_ptr + B_DPRE + n * 2 * HID + offs_j
            pooled = ws_ptr + OFF_POOLED + n * 2 * C + offs_c
            dpooled = bws_ptr + B_DPOOLED + n * 2 * C + offs_c
            h = tl.maximum(tl.load(hpre, mask=mask_j, other=0.0), 0.0)
            dpa = tl.load(dpre, mask=mask_j, other=0.0)
            avg = tl.load(pooled, mask=mask_c, other=0.0)
            dw1t += avg[:, None] * dpa[None, :]
            tl.atomic_add(dpooled, tl.sum(w1t * dpa[None, :], axis=1), mask=mask_c,
                          sem='relaxed')
            if PAIR:
                h += tl.maximum(tl.load(hpre + HID, mask=mask_j, other=0.0), 0.0)
                dpm = tl.load(dpre + HID, mask=mask_j, other=0.0)
                mx = tl.load(pooled + C, mask=mask_c, other=0.0)
                dw1t += mx[:, None] * dpm[None, :]
                tl.atomic_add(dpooled + C, tl.sum(w1t * dpm[None, :], axis=1), mask=mask_c,
                              sem='relaxed')
            dw2 += dl[:, None] * h[None, :]
        tl.store(bws_ptr + B_DW2 + offs_c[:, None] * HID + offs_j[None, :], dw2, mask=mask)
        tl.store(bws_ptr + B_DW1 + offs_j[None, :] * C + offs_c[:, None], dw1t, mask=mask)
        tl.store(bws_ptr + B_DB2 + offs_c, db2 * 2.0 if PAIR else db2,
                 mask=mask_c & (pid == 0))


@triton.jit
def _bwd_dx(g_ptr, x_ptr, ws_ptr, bws_ptr, dx_ptr, o_ptr, dr_ptr, OFF_A, OFF_S, OFF_DESC,
            OFF_POOLED, B_DDESC, B_DPOOLED, C, HW, sxn, sxc, sxhw, sgn, sgc, sghw,
            HAS_S: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_C: tl.constexpr,
            BLOCK_HW: tl.constexpr, TILES: tl.constexpr, STAGES: tl.constexpr):
    """CBAM: dx = g a s + a (ddesc_mean / C + ddesc_max [a x == desc_max])
    + dpooled_avg / HW + dpooled_max [x == channel max]; SE: dx = g a + dpooled_avg / HW,
    with RESIDUAL (SE's block tail max(x a + r, 0)) g taken where the saved output o > 0
    and stored as dr. dx, o and dr have x's strides. A program covers TILES consecutive
    pixel blocks of its channels (their per-channel values loaded once)."""
    pid_nc = tl.program_id(0)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    c64 = offs_c[:, None].to(tl.int64)
    n64 = n.to(tl.int64)
    a = tl.load(ws_ptr + OFF_A + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
    pooled = ws_ptr + OFF_POOLED + n * 2 * C + offs_c
    dpooled = bws_ptr + B_DPOOLED + n * 2 * C + offs_c
    gavg = tl.load(dpooled, mask=mask_c, other=0.0)[:, None] / HW
    if HAS_S:
        cmax = tl.load(pooled + C, mask=mask_c, other=0.0)[:, None]
        gmax = tl.load(dpooled + C, mask=mask_c, other=0.0)[:, None]
    hw_begin = tl.program_id(1) * (BLOCK_HW * TILES)
    for t in tl.range(0, TILES, num_stages=STAGES):
        offs_hw = hw_begin + t * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask_hw = offs_hw < HW
        mask = mask_c[:, None] & mask_hw[None, :]
        hw64 = offs_hw[None, :].to(tl.int64)
        xoffs = n64 * sxn + c64 * sxc + hw64 * sxhw
        g = tl.load(g_ptr + n64 * sgn + c64 * sgc + hw64 * sghw, mask=mask,
                    other=0.0).to(tl.float32)
        if HAS_S:
            xr = tl.load(x_ptr + xoffs, mask=mask, other=0.0)
            x = xr.to(tl.float32)
            s = tl.load(ws_ptr + OFF_S + n * HW + offs_hw, mask=mask_hw, other=0.0)[None, :]
            dbase = n * 2 * HW + offs_hw
            mx = tl.load(ws_ptr + OFF_DESC + dbase, mask=mask_hw, other=0.0)[None, :]
            gmx = tl.load(bws_ptr + B_DDESC + dbase, mask=mask_hw, other=0.0)[None, :]
            gmean = tl.load(bws_ptr + B_DDESC + dbase + HW, mask=mask_hw,
                            other=0.0)[None, :] / C
            dy = g * s + gmean + tl.where(x * a == mx, gmx, 0.0)
            dx = dy * a + gavg + tl.where(x == cmax, gmax, 0.0)
            tl.store(dx_ptr + xoffs, dx.to(xr.dtype), mask=mask)
        else:
            if RESIDUAL:
                ov = tl.load(o_ptr + xoffs, mask=mask, other=0.0)
                g = tl.where(ov > 0, g, 0.0)
                tl.store(dr_ptr + xoffs, g.to(ov.dtype), mask=mask)
            dx = g * a + gavg
            tl.store(dx_ptr + xoffs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---- plans: every integer argument, grid and workspace offset of one input signature ----

def _strides(t):
    """(stride_n, stride_c, stride_hw), or None when H and W do not merge into one axis."""
    sn, sc, sh, sw = t.stride()
    h, w = t.shape[2:]
    if h == 1:
        return sn, sc, sw
    if w == 1 or sh == sw * w:
        return sn, sc, sw if w > 1 else sh
    return None


def _layout(sizes):
    """Offsets of consecutive float32 regions (each 16-byte aligned) and the total."""
    offsets, total = {}, 0
    for name, size in sizes:
        offsets[name] = total
        total += (size + 3) // 4 * 4
    return offsets, total


# Passes over pixels split the channels over programs where the pixels alone give fewer
# than about PIXEL_PROGRAMS programs (four per SM of an H100 / H200), each program keeping
# at least MIN_SPLIT_CHANNELS channels, and only for at most MAX_SPLIT_PIXELS pixels
# (N x H x W). Swept on an H200 (264 / 528 / 1056 / 2112 programs, 32 / 64 channels,
# 16384 / 65536 pixels; docs/speed.md, v12): 528 programs took the least kernel time
# (with 32 or 64 channels alike), and splitting 65536 pixels slowed stage 2.
PIXEL_PROGRAMS = 528
MIN_SPLIT_CHANNELS = 64
MAX_SPLIT_PIXELS = 16384
# The backward's pass over pixels (_bwd_pixels) where it splits the channels (contiguous
# NCHW): steps of 64 channels x 32 pixels, 128 channels per program. Its sums over the
# pixels of each step (dL/dM_c) cost more on wider pixel blocks: at 2x1024x50x76 on an
# H200 the pass took 21.6 us against 26.1 us with the general rule (32 x 64, 224
# channels), and at 2x2048x25x38 11.5 us against 13.2 us (docs/speed.md, v24).
SPLIT_PIX_BLOCK = (64, 32)
SPLIT_PIX_CHANNELS = 128
# (channels, pixels) per step of CBAM's channel pooling (_spatial_pool) where it splits
# the channels and computes M_c itself (a direct pooling pass left it unformed): every
# program reads W2's rows of its channels, so longer pixel blocks read them fewer
# times. At most 2048 pixels per sample / more: at 2x2048x25x38 on an H200 the pass
# took 7.9 us with 16 x 256 against 10.5 us with 16 x 128; at 2x1024x50x76 9.7 us with
# 8 x 512 against 11.7 us (docs/speed.md, v24).
GATE_SPLIT_SP_BLOCK = ((16, 256), (8, 512))
# Stages of the software pipeline of each pass's loop over channel or pixel steps
# (tl.range's num_stages: that many steps' loads in flight; 1, none). Of 1 / 2 / 3 / 4
# (H200, docs/speed.md, v16): 3 took the least time for these three, 1 for the
# pooling pass and the pixels' pass.
LOOP_STAGES = dict(_pool_mlp=1, _spatial_pool=3, _bwd_pixels=1, _bwd_desc_reduce=3,
                   _bwd_reduce=3, _bwd_dx=1)
# CBAM's and SE's dL/dF pass (_bwd_dx) on larger maps: DX_TILES consecutive pixel blocks
# per program, their per-channel values loaded once, the blocks' loads pipelined in
# DX_STAGES stages. On an H200 (CBAM training, one module; docs/speed.md, v28-v29): 380.5 ->
# 364.8 us per step; at 2x2048x25x38 (950 pixels) slower (9.3 against 8.3 us).
DX_TILES = 2
DX_TILES_HW = 2048
DX_STAGES = 2
# The pooling pass runs the MLP's first layer in all its programs (atomics) rather than
# in one program per sample where the weights have at least this many values.
DIRECT_MLP_WEIGHTS = 32768
# The pooling pass over large maps (contiguous NCHW, H x W >= PIX_WIDE_HW): direct, in
# programs of LARGE_POOL_BLOCK (channels, pixels per step) with two pipeline stages, where
# that makes at least LARGE_POOL_PROGRAMS programs. Then no program of the pass sums the
# partials of the others for the MLP's first layer after they end. On an H200 (docs/
# speed.md, v28), at 2x512x100x152: SE 16.3 -> 12.9 us, CBAM 21.0 -> 19.4 us; at
# 2x256x200x304 (512 such programs) the spans were as fast (SE 24.9 against 25.5 us);
# 2 or 4 channels per program were slower (21.7 / 34.6 us for SE at 2x512x100x152).
LARGE_POOL_BLOCK = (1, 4096)
LARGE_POOL_PROGRAMS = 1024
LARGE_POOL_STAGES = 2
# pixels per step of the pooling pass (contiguous NCHW; 4 channels, or 8 channels and
# half as many pixels for a direct pass over at most 2048 pixels)
POOL_BLOCK_HW = 1024
# warps of the pooling pass where its programs take steps of 4 channels x POOL_BLOCK_HW
# pixels (contiguous NCHW, not LARGE_POOL_BLOCK): on an H200 (docs/speed.md, v30), at
# 2x256x200x304 SE 25.2 -> 24.3 us and CBAM 27.2 -> 26.3 us, at 2x1024x50x76 CBAM 10.6 ->
# 9.2 us (inference) and 13.9 -> 11.1 us (training) against 4 warps; the other blocks were
# slower with 8 (2x512x100x152: SE 13.0 -> 15.9 us; 2x2048x25x38: 5.5 -> 7.6 us).
POOL_WIDE_WARPS = 8
# (channels, pixels) per step of a direct pooling pass over channels_last inputs (one
# program per block of channels and sample, over all pixels: 64 channels left 32 programs
# at 2x1024x50x76, 73 us for CBAM; 16 channels, 27 us; docs/speed.md, v13)
CL_DIRECT_POOL_BLOCK = (16, 128)
# programs of the pooling pass where it runs over spans of H x W (not direct). Of 512 /
# 1024 / 2048 programs, 512 / 1024 / 2048 pixels per step and 4 / 8 warps, these (512,
# 1024, 4) were within 10 us per step of the best (H200, docs/speed.md, v13).
POOL_PROGRAMS = 512
# The passes over blocks of pixels (contiguous NCHW): 128-pixel blocks where that gives
# at least WIDE_PROGRAMS programs, else 64-pixel blocks (more programs in flight: at
# 2x512x100x152 on an H200, 238 programs of 128 pixels left the GPU half idle); 64
# channels per step from PIX_WIDE_HW pixels per sample on, else 32 (docs/speed.md, v10).
WIDE_PROGRAMS = 512
PIX_WIDE_HW = 8192
# pixels per program of the spatial convolution's backward (BLOCKS: long, default,
# short): short blocks where the default would make fewer than CONV_BWD_PROGRAMS[1]
# programs (an H200's SMs); long ones where BatchNorm uses running statistics, W is a
# multiple of 16 and they still make CONV_BWD_PROGRAMS[0] programs. On an H200, CBAM
# training, one module (docs/speed.md, v26): at 2x256x200x304 22.5 us with 512 pixels
# against 29.1 with 128; at 2x1024x50x76 and 2x2048x25x38 5.2 / 4.5 us with 64 against
# 6.4 / 5.8 with 128. With batch statistics the 512-pixel programs were slower (41.4
# against 35.9 us), and where W is not a multiple of 16 they took 10-15x as long (the pass
# alone at 2x200x300: 327 us; 128 stayed the best of 64 / 128 / 256 / 512 there).
CONV_BWD_BLOCKS = (512, 128, 64)
CONV_BWD_PROGRAMS = (200, 132)
# taps of the spatial convolution's dW summed per step in _bwd_spatial (a power of 2)
CONV_BWD_TAPS = 32
# the MLP's backward: hidden units per program, channels per step of its serial phase
# (1024: fewer dependent steps; 256 -> 1024 took a step's 16 CBAM and 16 SE modules
# 509 -> 424 us on an H200, docs/speed.md, v11)
MLP_BWD_BLOCK_J = 16
MLP_BWD_BLOCK_DH = 1024
# channels per program of the MLP's backward (its second phase, 64 per step):
# MLP_BWD_CHANNELS, doubled while there would be more than MLP_BWD_PROGRAMS programs. Of
# 32 / 64 / 128 channels and 4 / 8 / 16 / 32 hidden units per program at 2 / 4 warps, 64
# channels and 16 units at 4 warps took the least time at stages 1-3 of ResNet-50, 128
# channels at stage 4 (256 programs of 64 channels; H200, docs/speed.md, v14). With two
# samples per pass over W2 (v29) these settings stayed the best of 10 (64 / 256
# programs, 512 / 2048 channels per step, 8 / 32 units, 2 / 8 warps).
MLP_BWD_CHANNELS = 64
MLP_BWD_PROGRAMS = 128
# programs of the reductions over H x W by channel blocks (spans of pixels per program)
REDUCE_PROGRAMS = 1024
# channels per block of the descriptors' reduction (CBAM's backward; 128 pixels). Of 8 /
# 16 / 32 / 64 channels, 512 / 1024 / 2048 programs and 1 / 2 / 4 warps, 16 channels,
# 1024 programs and one warp took the least time (H200, docs/speed.md, v13)
DESC_BLOCK_C = 16
# warps per program, by kernel, for contiguous NCHW inputs (Triton's default, 4, for the
# other kernels and for channels_last). Swept over 1 / 2 / 4 / 8 / 16 warps per kernel on
# an H200 (docs/speed.md, v13): the passes over tiles of 8 channels x 128 pixels ran
# fastest with one warp (each thread then keeps 32 values in flight), and so did the
# descriptors' reduction over 16 channels x 128 pixels; 8 warps helped none of the
# backward passes, although they would need fewer registers per thread.
NUM_WARPS = dict(_bwd_dx=1, _cbam_scale=1, _scale_channels=1, _bwd_desc_reduce=1)
# Large maps (contiguous NCHW, N x H x W > MAX_SPLIT_PIXELS, H x W >= PIX_WIDE_HW), by
# whether 128-pixel blocks are wide (see WIDE_PROGRAMS): the (channels, pixels) per step
# of the backward's pass over pixels, and warps per kernel. Swept on an H200 (CBAM
# training, one module; docs/speed.md, v26): at 2x256x200x304 (wide) `_bwd_pixels` took
# 39.1 us with 32 x 128 at one warp against 44.4 with 64 x 128 at four; at 2x512x100x152
# 24.1 us with 64 x 64 at two warps against 25.7 at four; `_bwd_desc_reduce` at two warps
# 22.3 / 12.2 us against 24.0 / 13.1 at one.
LARGE_PIX_BLOCK = {True: (32, 128), False: (64, 64)}
LARGE_WARPS = {True: dict(_bwd_pixels=1, _bwd_desc_reduce=2),
               False: dict(_bwd_pixels=2, _bwd_desc_reduce=2)}


def _channel_split(programs, n, hw, c, block_c):
    """(channels per program, number of channel splits) for a pass over pixels that has
    ``programs`` programs per channel split."""
    if n * hw > MAX_SPLIT_PIXELS:
        return c, 1
    splits = max(1, min(triton.cdiv(PIXEL_PROGRAMS, programs), c // MIN_SPLIT_CHANNELS))
    cps = triton.cdiv(triton.cdiv(c, splits), block_c) * block_c
    return cps, triton.cdiv(c, cps)


def _reduce_grid(n, c, hw, block_c, block_hw):
    """(pixels per program, grid) of a reduction over H x W by channel blocks: spans of
    whole pixel blocks, about REDUCE_PROGRAMS programs in all."""
    channel_blocks, pixel_blocks = n * triton.cdiv(c, block_c), triton.cdiv(hw, block_hw)
    per = min(max(1, channel_blocks * pixel_blocks // REDUCE_PROGRAMS), pixel_blocks)
    return per * block_hw, (channel_blocks, triton.cdiv(hw, per * block_hw), 1)


class _Plan:
    """Launch parameters for one (kind, shape, strides, dtype, device) signature."""

    def __init__(self, kind, x, st, hid, k):
        n, c, h, w = x.shape
        hw = h * w
        self.n, self.c, self.h, self.w, self.hw, self.st, self.hid, self.k = \
            n, c, h, w, hw, st, hid, k
        cl = st[1] == 1  # channels_last: C is the contiguous axis
        cbam = kind == 'cbam'
        # pooling over H x W: channel blocks, each over all of H x W (direct: the MLP's
        # first layer in every program) or over spans of it (about POOL_PROGRAMS
        # programs, partials)
        self.hid_p = triton.next_power_of_2(hid)
        self.mlp_bc = max(16, 4096 // self.hid_p)
        self.direct = c * hid >= DIRECT_MLP_WEIGHTS
        large_pool = (not cl and hw >= PIX_WIDE_HW
                      and n * triton.cdiv(c, LARGE_POOL_BLOCK[0]) >= LARGE_POOL_PROGRAMS)
        if large_pool:
            self.direct = True
            self.pool_bc, self.pool_bhw = LARGE_POOL_BLOCK
        elif cl:  # (a direct pass has one program per channel block and sample)
            self.pool_bc, self.pool_bhw = CL_DIRECT_POOL_BLOCK if self.direct else (64, 32)
        else:
            self.pool_bc, self.pool_bhw = (8, POOL_BLOCK_HW // 2) \
                if self.direct and hw <= 2048 else (4, POOL_BLOCK_HW)
        ncb = n * triton.cdiv(c, self.pool_bc)
        hw_blocks = triton.cdiv(hw, self.pool_bhw)
        per = hw_blocks if self.direct else min(max(1, ncb * hw_blocks // POOL_PROGRAMS),
                                                 hw_blocks)
        self.pool_hw_per_prog = per * self.pool_bhw
        self.split = triton.cdiv(hw, self.pool_hw_per_prog)
        self.direct = self.direct or self.split == 1
        # CBAM's gate formed by the pooling pass's last program (else by _spatial_pool)
        self.gate_in_pool = not self.direct or large_pool
        self.pool_grid = (ncb, self.split, 1)
        # passes over blocks of pixels, the channels split over programs where few
        wide = n * triton.cdiv(hw, 128) >= WIDE_PROGRAMS
        large = not cl and n * hw > MAX_SPLIT_PIXELS and hw >= PIX_WIDE_HW  # LARGE_*
        if not cl and n * hw <= MAX_SPLIT_PIXELS:  # channel splits of a fixed size
            self.pix_bc, self.pix_bhw = SPLIT_PIX_BLOCK
            self.pix_cps = min(SPLIT_PIX_CHANNELS, triton.cdiv(c, self.pix_bc) * self.pix_bc)
        else:
            self.pix_bc, self.pix_bhw = (64, 32) if cl else LARGE_PIX_BLOCK[wide] if large \
                else (64 if hw >= PIX_WIDE_HW else 32, 128 if wide else 64)
            self.pix_cps = _channel_split(n * triton.cdiv(hw, self.pix_bhw), n, hw, c,
                                          self.pix_bc)[0]
        self.pix_splits = triton.cdiv(c, self.pix_cps)
        pix_blocks = triton.cdiv(hw, self.pix_bhw)
        self.pix_grid = (n * self.pix_splits, pix_blocks, 1)
        # the spatial convolution's backward: (pixels per program, grid) by whether
        # BatchNorm uses batch statistics (which also reads z at every tap)
        long_block, block, short_block = CONV_BWD_BLOCKS
        if n * triton.cdiv(hw, block) < CONV_BWD_PROGRAMS[1]:
            block = short_block
        self.conv_bwd = {bn_train: (b, (n, triton.cdiv(hw, b), 1)) for bn_train, b in (
            (True, block),
            (False, long_block if w % 16 == 0 and n * triton.cdiv(hw, long_block)
             >= CONV_BWD_PROGRAMS[0] else block))}
        # (channel splits make programs where n * hw <= MAX_SPLIT_PIXELS; where the pass
        # also forms M_c, after a direct pooling pass, longer pixel blocks)
        self.sp_bc, self.sp_bhw = (64, 32) if cl else (
            (GATE_SPLIT_SP_BLOCK[hw > 2048] if self.direct else (16, 128))
            if n * hw <= MAX_SPLIT_PIXELS else (16, 128) if wide else (32, 64))
        sp_blocks = triton.cdiv(hw, self.sp_bhw)
        self.sp_cps, self.sp_splits = _channel_split(n * sp_blocks, n, hw, c, self.sp_bc)
        self.sp_grid = (n * self.sp_splits, sp_blocks, 1)
        self.conv_block = 256
        self.conv_grid = (n, triton.cdiv(hw, self.conv_block), 1)
        self.conv_parts = n * self.conv_grid[1]
        # BatchNorm's backward partials: one per pixel block
        self.bnpart = n * pix_blocks
        # counters: one per sample (pooling), the convolution's, and with channel splits
        # one per pixel block (_bwd_pixels)
        self.counter_slots = n + 1 + (n * pix_blocks if self.pix_splits > 1 else 0)
        # tiles (channel block x pixel block)
        self.tile_bc, self.tile_bhw = (64, 32) if cl else (8, 128)
        self.tile_grid = (n * triton.cdiv(c, self.tile_bc), triton.cdiv(hw, self.tile_bhw), 1)
        # the backward's last pass (dL/dF): DX_TILES pixel blocks per program where the
        # map has at least DX_TILES_HW pixels per sample (else one)
        self.dx_tiles = DX_TILES if not cl and hw >= DX_TILES_HW else 1
        self.dx_grid = (self.tile_grid[0],
                        triton.cdiv(hw, self.tile_bhw * self.dx_tiles), 1)
        self.red_hw_per_prog, self.red_grid = _reduce_grid(n, c, hw, self.tile_bc,
                                                           self.tile_bhw)
        # the descriptors' reduction (CBAM) reads per-pixel values with every channel
        # block: wider channel blocks read them fewer times
        self.desc_bc, self.desc_bhw = (64, 32) if cl else (DESC_BLOCK_C, 128)
        self.desc_hw_per_prog, self.desc_grid = _reduce_grid(n, c, hw, self.desc_bc,
                                                             self.desc_bhw)
        self.mlp_bwd_bj, self.mlp_bwd_cpb = MLP_BWD_BLOCK_J, MLP_BWD_CHANNELS
        while (triton.cdiv(hid, self.mlp_bwd_bj) * triton.cdiv(c, self.mlp_bwd_cpb)
               > MLP_BWD_PROGRAMS):
            self.mlp_bwd_cpb *= 2
        self.mlp_bwd_grid = (triton.cdiv(hid, self.mlp_bwd_bj),
                             triton.cdiv(c, self.mlp_bwd_cpb), 1)
        self.ws, self.ws_size = _layout([
            ('part', 0 if self.direct else self.split * 2 * n * c), ('a', n * c),
            ('pooled', n * 2 * c), ('hpre', n * 2 * hid), ('h', n * hid),
            ('desc', n * 2 * hw if cbam else 0),
            ('z', n * hw if cbam else 0), ('s', n * hw if cbam else 0),
            ('cpart', self.conv_parts * 3 if cbam else 0), ('stats', 2 if cbam else 0)])
        # the parameters' gradients: one unpadded tail of the backward workspace, handed
        # to autograd as views
        grads = [('dw1', hid * c), ('db1', hid), ('dw2', c * hid), ('db2', c)]
        self.grad_shapes = [(hid, c), (hid,), (c, hid), (c,)]
        if cbam:
            grads += [('dconv', 2 * k * k), ('dbn', 2)]
            self.grad_shapes += [(1, 2, k, k), (1,), (1,)]
        self.grad_sizes = [size for _, size in grads]
        if cbam:  # dbn holds (d gamma, d beta)
            self.grad_sizes[-1:] = [1, 1]
        # the backward's regions follow the forward's in one allocation (autograd only)
        self.bws, bws_size = _layout([
            ('da', n * c), ('dpooled', n * 2 * c), ('dpre', n * 2 * hid),
            ('dz', n * hw if cbam else 0), ('bnpart', self.bnpart * 2 if cbam else 0),
            ('ddesc', n * 2 * hw if cbam else 0), ('grads', sum(self.grad_sizes))])
        self.bws = {name: self.ws_size + off for name, off in self.bws.items()}
        self.total_size = self.ws_size + bws_size
        grad_start = offset = self.bws['grads']
        for name, size in grads:
            self.bws[name] = offset
            offset += size
        self.split_sizes = [grad_start] + self.grad_sizes + [self.total_size - offset]
        # accumulated by atomics: zeroed by the forward's _pool_mlp
        self.atomic_regions = [(self.bws['da'], n * c), (self.bws['dpooled'], n * 2 * c)]
        if cbam:
            self.atomic_regions.append((self.bws['dconv'], 2 * k * k))
            if self.pix_splits > 1:  # dL/ds, summed over the channel splits
                self.atomic_regions.append((self.bws['dz'], n * hw))

        self.compiled = {}  # compiled kernels of this signature (triton_launch.launch)
        self.warps = collections.defaultdict(lambda: 4, {} if cl else NUM_WARPS)
        if large:
            self.warps.update(LARGE_WARPS[wide])
        self.stages = dict(LOOP_STAGES)
        if large_pool:
            self.stages['_pool_mlp'] = LARGE_POOL_STAGES
        elif not cl and (self.pool_bc, self.pool_bhw) == (4, POOL_BLOCK_HW):
            self.warps['_pool_mlp'] = POOL_WIDE_WARPS
        if self.dx_tiles > 1:
            self.stages['_bwd_dx'] = DX_STAGES
        # recorded programs (inference) and C++ training states by call kind, or None
        # where a recording cannot be replayed (triton_programs)
        self.native = {}
        o, b = self.ws, self.bws
        pair = cbam
        self.poolmlp_tail = {zero: (
            o['part'], o['a'], o['pooled'], o['hpre'], o['h'], o['desc'] if cbam else 0,
            b['da'], b['dpooled'], b['dconv'] if pair else 0, 2 * k * k,
            b['dz'] if cbam else 0, n, c, hid, hw, *st, self.pool_hw_per_prog,
            pair, self.direct, zero, cbam and self.sp_splits > 1,
            cbam and self.pix_splits > 1, self.hid_p, self.mlp_bc, self.pool_bc,
            self.pool_bhw, pair and self.gate_in_pool)
            for zero in (False, True)}
        self.mlpbwd_tail = (
            o['a'], o['pooled'], o['hpre'], b['da'], b['dpre'], b['dw1'], b['db1'], b['dw2'],
            b['db2'], b['dpooled'], n, c, hid, self.mlp_bwd_cpb, pair, self.mlp_bwd_bj, 64,
            min(MLP_BWD_BLOCK_DH, triton.next_power_of_2(c)))


_plans = {}


def _plan(kind, x, hid, k):
    key = (kind, x.shape, x.stride(), x.dtype, x.get_device(), not x.data_ptr() % 16,
           hid, k)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _Plan(kind, x, _strides(x), hid, k)
    return plan


_counters = {}
_accumulators = {}


def _zeroed_for(cache, x, stream, size, minimum, dtype):
    """A zeroed buffer of at least ``size`` values kept in ``cache`` per device and
    stream: the kernels that use it leave it zeroed after use."""
    key = (x.get_device(), stream)
    buf = cache.get(key)
    if buf is None or buf.numel() < size:
        buf = cache[key] = torch.zeros(max(size, minimum), dtype=dtype, device=x.device)
    return buf


def _counters_for(x, stream, size):
    """int32 counters for the kernels' last-program-finishes steps."""
    return _zeroed_for(_counters, x, stream, size, 64, torch.int32)


def _accumulators_for(x, stream, size):
    """float32 accumulators for the pooling pass's MLP layer (the last program of each
    sample zeroes its part after use)."""
    return _zeroed_for(_accumulators, x, stream, size, 1024, torch.float32)


# ---- the passes ------------------------------------------------------------------------

def _channel_map(plan, stream, counters, x, ws, w1, b1, w2, b2, zero_grads, launch=launch):
    """Pooling and the MLP (where ``plan.direct``, only its first layer: the next pass
    runs the second)."""
    acc = _accumulators_for(x, stream, plan.n * 2 * plan.hid)
    launch(_pool_mlp, plan.pool_grid, plan.compiled, ('poolmlp', zero_grads), stream,
           x, ws, counters, acc, w1, b1, w2, b2, *plan.poolmlp_tail[zero_grads],
           plan.stages['_pool_mlp'], num_warps=plan.warps['_pool_mlp'])


def _cbam_passes(plan, stream, x, ws, out, params, bn, bn_mode, zero_grads, residual=None,
                 launch=launch):
    """The forward passes (four launches). bn_mode: 'eval' (running statistics, nothing
    saved for a backward), 'eval_saved' (running statistics, z, s and the statistics
    saved) or 'train' (batch statistics, running statistics updated, z and s saved).
    ``residual``: the block's tail ``max(CBAM(x) + residual, 0)`` (laid out as x)."""
    o, st = plan.ws, plan.st
    w1, b1, w2, b2, conv_w, bn_w, bn_b = params
    counters = _counters_for(x, stream, plan.counter_slots)
    _channel_map(plan, stream, counters, x, ws, w1, b1, w2, b2, zero_grads, launch)
    launch(_spatial_pool, plan.sp_grid, plan.compiled, 'spool', stream,
           x, ws, w2, b2, o['a'], o['h'], o['desc'], plan.c, plan.hid, plan.hw,
           plan.sp_cps, *st, plan.gate_in_pool, plan.sp_splits > 1, plan.hid_p, plan.sp_bc,
           plan.sp_bhw, plan.stages['_spatial_pool'],
           num_warps=plan.warps['_spatial_pool'])
    buffers = bn._buffers
    rm, rv = buffers['running_mean'], buffers['running_var']
    if rm is None:
        rm = rv = ws
    train = bn_mode == 'train'
    update = train and rm is not ws
    save_z = bn_mode != 'eval'
    w_cl = _weight_channels_last(conv_w)
    launch(_spatial_conv, plan.conv_grid, plan.compiled,
           ('conv', train, update, save_z, w_cl),
           stream, ws, conv_w, counters, rm, rv,
           buffers['num_batches_tracked'] if update else ws, bn_w, bn_b, o['desc'], o['z'],
           o['s'], o['cpart'], o['stats'], plan.n, plan.h, plan.w, bn.eps,
           bn.momentum if update else 0.0, train, update, save_z, plan.k, w_cl,
           plan.conv_block,
           num_warps=plan.warps['_spatial_conv'])
    fused = residual is not None
    launch(_cbam_scale, plan.tile_grid, plan.compiled, ('cscale', train, fused), stream,
           x, ws, out, residual if fused else x, bn_w, bn_b, o['a'], o['z'], o['stats'],
           o['s'], plan.c, plan.hw, *st, not train, fused, plan.tile_bc, plan.tile_bhw,
           num_warps=plan.warps['_cbam_scale'])


def _se_passes(plan, stream, x, ws, out, params, zero_grads, residual=None, launch=launch):
    """The forward passes (two launches); ``residual``: the block's tail
    ``max(SE(x) + residual, 0)`` (residual laid out as x)."""
    w1, b1, w2, b2 = params
    counters = _counters_for(x, stream, plan.n)
    _channel_map(plan, stream, counters, x, ws, w1, b1, w2, b2, zero_grads, launch)
    fused = residual is not None
    launch(_scale_channels, plan.tile_grid, plan.compiled, ('scale', fused), stream,
           x, ws, out, residual if fused else x, w2, b2, plan.ws['a'], plan.ws['h'],
           plan.c, plan.hid, plan.hw, *plan.st, fused, plan.hid_p, plan.tile_bc,
           plan.tile_bhw, num_warps=plan.warps['_scale_channels'])


def _backward_common(ctx, g):
    """(plan, stream, g, its strides, launch-key extra), the atomic accumulators zeroed
    again when the graph is run backward a second time (retain_graph)."""
    plan = ctx.plan
    ws = ctx.saved_tensors[1]
    if ctx.backward_done:
        for start, size in plan.atomic_regions:
            ws.narrow(0, start, size).zero_()
    ctx.backward_done = True
    sg = _strides(g)
    if sg is None:
        g = g.contiguous()
        sg = _strides(g)
    extra = (sg, g.dtype, g.data_ptr() % 16 == 0)
    return plan, current_stream(g.get_device()), g, sg, extra


def _mlp_backward(plan, stream, ws, w1, w2, launch=launch):
    launch(_mlp_bwd, plan.mlp_bwd_grid, plan.compiled,
           'mlpbwd', stream, ws, ws, w1, w2, *plan.mlpbwd_tail,
           num_warps=plan.warps['_mlp_bwd'])


def _cbam_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, counters, bn_train,
                          out=None, dr=None, launch=launch):
    """The backward passes (five launches; four where ``dx`` is None). With the block's
    tail (``out``: the forward's output, ``dr``: the residual's gradient, both laid out
    as x) the first pass takes the ReLU's mask from ``out`` and writes the masked
    gradient to ``dr``, which the last pass reads as its gradient."""
    o, b, st = plan.ws, plan.bws, plan.st
    fc1_w, fc2_w, conv_w, bn_w = params[0], params[2], params[4], params[5]
    fused = out is not None
    launch(_bwd_pixels, plan.pix_grid, plan.compiled, ('bwdpix', extra, fused), stream,
           g, x, ws, ws, counters, out if fused else x, dr if fused else x, o['a'], o['s'],
           o['z'], o['stats'], b['da'], b['dz'], b['bnpart'], plan.n + 1, plan.n, plan.c,
           plan.hw, plan.pix_cps, *st, *sg, plan.pix_splits > 1, fused, plan.pix_bc,
           plan.pix_bhw, plan.stages['_bwd_pixels'], num_warps=plan.warps['_bwd_pixels'])
    if fused:  # the dx pass reads the masked gradient, laid out as x
        g, sg, extra = dr, st, (st, dr.dtype, True)
    w_cl = _weight_channels_last(conv_w)
    block, grid = plan.conv_bwd[bn_train]
    launch(_bwd_spatial, grid, plan.compiled, ('bwdsp', bn_train, w_cl),
           stream, ws, ws, conv_w, bn_w, o['desc'], o['z'], o['stats'], b['dz'],
           b['bnpart'], plan.bnpart, b['dconv'], b['dbn'], b['ddesc'], plan.n, plan.h,
           plan.w, bn_train, plan.k, w_cl, CONV_BWD_TAPS, 256, block,
           num_warps=plan.warps['_bwd_spatial'])
    launch(_bwd_desc_reduce, plan.desc_grid, plan.compiled, 'bwddesc', stream,
           x, ws, ws, o['a'], o['desc'], b['da'], b['ddesc'], plan.c, plan.hw, *st,
           plan.desc_hw_per_prog, plan.desc_bc, plan.desc_bhw,
           plan.stages['_bwd_desc_reduce'], num_warps=plan.warps['_bwd_desc_reduce'])
    _mlp_backward(plan, stream, ws, fc1_w, fc2_w, launch)
    if dx is not None:
        launch(_bwd_dx, plan.dx_grid, plan.compiled, ('dx', extra), stream,
               g, x, ws, ws, dx, x, dx, o['a'], o['s'], o['desc'], o['pooled'],
               b['ddesc'], b['dpooled'], plan.c, plan.hw, *st, *sg, True, False,
               plan.tile_bc,
               plan.tile_bhw, plan.dx_tiles, plan.stages['_bwd_dx'],
               num_warps=plan.warps['_bwd_dx'])


def _se_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, out=None, dr=None,
                        launch=launch):
    """The backward passes (three launches; two where ``dx`` is None). With the block's
    tail (``out``: the forward's output, ``dr``: the residual's gradient, both laid out
    as x) the ReLU's mask comes from ``out`` and the last pass also writes ``dr``."""
    o, b, st = plan.ws, plan.bws, plan.st
    fused = out is not None
    launch(_bwd_reduce, plan.red_grid, plan.compiled, ('bwdred', extra, fused), stream,
           g, x, out if fused else x, ws, b['da'], plan.c, plan.hw, *st, *sg,
           plan.red_hw_per_prog, fused, plan.tile_bc, plan.tile_bhw,
           plan.stages['_bwd_reduce'], num_warps=plan.warps['_bwd_reduce'])
    _mlp_backward(plan, stream, ws, params[0], params[2], launch)
    if dx is not None:
        launch(_bwd_dx, plan.dx_grid, plan.compiled, ('dx', extra, fused), stream,
               g, x, ws, ws, dx, out if fused else x, dr if fused else dx, o['a'], 0, 0,
               o['pooled'], 0, b['dpooled'], plan.c, plan.hw, *st, *sg, False, fused,
               plan.tile_bc, plan.tile_bhw, plan.dx_tiles, plan.stages['_bwd_dx'],
               num_warps=plan.warps['_bwd_dx'])


def _param_grads(plan, ws, needs, params):
    """The parameters' gradients in the workspace, each laid out as its parameter."""
    grads = ws.split_with_sizes(plan.split_sizes)[1:-1]
    return [(g.as_strided(shape, p.stride()) if len(shape) > 1 else g) if need else None
            for g, shape, need, p in zip(grads, plan.grad_shapes, needs, params)]


class _AttentionFunction(torch.autograd.Function):
    """CBAM or SE (``ctx.kind``) through the Triton passes, run from Python. Where
    :mod:`.triton_programs` is enabled it records the forward and the backward launches
    of the call, and once both are recorded the plan's later calls with the same
    ``native_key`` run as the C++ autograd Function instead."""

    @staticmethod
    def forward(ctx, x, residual, *inputs):
        *params, plan, bn, bn_train, rest, native_key = inputs
        cbam = bn is not None
        fused = residual is not None
        ws = torch.empty(plan.total_size, device=x.device, dtype=torch.float32)
        out = torch.empty_like(x)
        stream = current_stream(x.get_device())
        recorder = triton_programs.Recorder() if native_key is not None else None
        run = recorder or launch
        if cbam:
            bn_mode = 'train' if bn_train else 'eval_saved'
            _cbam_passes(plan, stream, x, ws, out, params, bn, bn_mode, True, residual, run)
        else:
            _se_passes(plan, stream, x, ws, out, params, True, residual, run)
        ctx.save_for_backward(x, ws, out if fused else None, *params)
        ctx.plan, ctx.cbam, ctx.bn_train, ctx.backward_done = plan, cbam, bn_train, False
        ctx.rest, ctx.native_key, ctx.forward_program = rest, native_key, None
        ctx.fused = fused
        if recorder is not None:
            tail = [residual] if fused else []
            ctx.forward_program = recorder.program([x, ws, out, *params, *rest, *tail])
            if ctx.forward_program is None:
                plan.native[native_key] = None  # not replayable: stay in Python
        return out

    @staticmethod
    def backward(ctx, g):
        x, ws, out, *params = ctx.saved_tensors
        plan, stream, g, sg, extra = _backward_common(ctx, g)
        needs = ctx.needs_input_grad
        fused = ctx.fused
        # with the block's tail the last pass writes both gradients: always run
        dx = torch.empty_like(x) if needs[0] or fused else None
        dr = torch.empty_like(x) if fused else None
        # a program is recorded where the C++ Function would launch the same kernels: the
        # gradient laid out as x and aligned, dx computed
        record = (ctx.forward_program is not None and dx is not None and sg == plan.st
                  and g.dtype == x.dtype and extra[2] and x.stride() == dx.stride())
        recorder = triton_programs.Recorder() if record else None
        run = recorder or launch
        if ctx.cbam:
            counters = ctx.rest[3]
            _cbam_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, counters,
                                  ctx.bn_train, out, dr, run)
        else:
            _se_backward_passes(plan, stream, g, sg, extra, x, ws, dx, params, out, dr, run)
        if recorder is not None:
            tail = [out, dr] if fused else []
            backward = recorder.program([g, x, ws, dx, *params, *ctx.rest, *tail])
            plan.native[ctx.native_key] = None if backward is None else \
                triton_programs.train_state(ctx.forward_program, backward, plan, params,
                                            fused)
        return (dx if needs[0] else None, dr if needs[1] else None,
                *_param_grads(plan, ws, needs[2:2 + len(params)], params),
                None, None, None, None, None)


# ---- entry points ---------------------------------------------------------------------

def _bn_training(bn):
    return bn.training or bn._buffers['running_mean'] is None


def _weight_channels_last(w):
    """Whether the kernels read (and write the gradient of) the spatial convolution's
    weight channels_last, as ``model.to(memory_format=torch.channels_last)`` lays it out;
    else contiguous."""
    return not w.is_contiguous()


def _params_ready(params, laid_out=()):
    """The kernels read the weights as 16-byte aligned float32, contiguous, or for the
    indices in ``laid_out`` contiguous or channels_last."""
    for i, p in enumerate(params):
        if p.dtype is not torch.float32 or p.data_ptr() % 16:
            return False
        if not (p.is_contiguous() or i in laid_out
                and p.is_contiguous(memory_format=torch.channels_last)):
            return False
    return True


def _records_grad(x, params):
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in params))


def _run(plan, x, stream, params, bn, bn_train, inplace, rest, key_extra, passes,
         bind=None, residual=None):
    """One call on ``plan``: the C++ replay of its recorded program where there is one,
    else the Python passes (``passes(stream, ws, out, launch)``), recording them.
    ``bind(owner, train)``, where given, binds a replayed call to its module.
    ``residual``: the block's tail (the programs name it after ``rest``)."""
    tail = [] if residual is None else [residual]
    native = triton_programs.enabled()
    if triton_programs.not_built():
        from .extensions import warn_not_built
        warn_not_built('_triton_programs', 'the Triton kernels are launched from Python, '
                       'with more host time per call')
    if _records_grad(x, params) or residual is not None and _records_grad(residual, ()):
        key = ('train', bn_train) + key_extra
        state = plan.native.get(key) if native else None
        if state is not None:
            if bind is not None:
                bind(state, True)
            return triton_programs.train(state, x, list(params), stream, rest + tail)
        return _AttentionFunction.apply(x, residual, *params, plan, bn, bn_train, rest,
                                        key if native and key not in plan.native else None)
    key = ('infer', bn_train, inplace) + key_extra
    program = plan.native.get(key) if native else None
    if program is not None:
        if bind is not None:
            bind(program, False)
        return triton_programs.infer(program, x, inplace, plan.ws_size, stream,
                                     [*params, *rest, *tail])
    # inference: the last pass reads each element of x before it writes it (inplace)
    out = x if inplace else torch.empty_like(x)
    ws = torch.empty(plan.ws_size, device=x.device, dtype=torch.float32)
    if native and key not in plan.native:
        recorder = triton_programs.Recorder()
        passes(stream, ws, out, recorder)
        plan.native[key] = recorder.program([x, ws, out, *params, *rest, *tail])
    else:
        passes(stream, ws, out, launch)
    return out


def _laid_out_as(t, x):
    """Whether ``t`` can be read with ``x``'s offsets by kernels specialised for x."""
    return (t.shape == x.shape and t.stride() == x.stride() and t.dtype == x.dtype
            and t.device == x.device and (t.data_ptr() % 16 == 0) == (x.data_ptr() % 16 == 0))


def _same(container, *keys):
    """Checks for :func:`.triton_programs.bind`: ``container[key]`` stays this object."""
    return [(container, key, container[key], False) for key in keys]


def _binder(module, inplace, x, stream, params, rest, plan, checks, residual=False):
    """``bind`` for :func:`_run`, or None without a module to bind to."""
    if module is None:
        return None
    return lambda owner, train: triton_programs.bind(
        module, owner, train, x, inplace, plan.ws_size, stream, params, rest, checks(),
        residual)


def cbam_forward(x, channel_attention, spatial_attention, inplace=False, module=None,
                 residual=None):
    """CBAM with the default options, or None where these kernels do not apply (the
    caller then runs the PyTorch fast path). ``module``: the CBAM module to bind
    replayed calls to (:func:`.triton_programs.bind`), or None. ``residual``: the
    block's tail, ``max(CBAM(x) + residual, 0)``, where ``residual`` is laid out as x
    (same shape, dtype, strides and 16-byte alignment; else None)."""
    ca_modules, sa_modules = channel_attention._modules, spatial_attention._modules
    bn = sa_modules['bn']
    f1, f2 = ca_modules['fc1']._parameters, ca_modules['fc2']._parameters
    cv, bp = sa_modules['conv']._parameters, bn._parameters
    params = (f1['weight'], f1['bias'], f2['weight'], f2['bias'], cv['weight'],
              bp['weight'], bp['bias'])
    bn_train = _bn_training(bn)
    if not _params_ready(params, laid_out=(4,)) or (bn.training and bn.momentum is None):
        return None
    if _strides(x) is None:
        x = x.contiguous()
    if residual is not None and not _laid_out_as(residual, x):
        return None
    plan = _plan('cbam', x, params[0].shape[0], params[4].shape[-1])
    if bn_train and plan.n * plan.hw < 2:
        return None  # BatchNorm's own error for one value per channel
    buffers = bn._buffers
    rm, rv, nbt = buffers['running_mean'], buffers['running_var'], \
        buffers['num_batches_tracked']
    stream = current_stream(x.get_device())
    # the tensors a recorded program may name besides x, the workspace, out and params
    # (x stands in for absent buffers: the kernels then read the workspace instead)
    rest = [x if rm is None else rm, x if rv is None else rv, x if nbt is None else nbt,
            _counters_for(x, stream, plan.counter_slots),
            _accumulators_for(x, stream, plan.n * 2 * plan.hid)]
    fused = residual is not None
    key_extra = ('cbam', rm is None, nbt is None, bn.eps, bn.momentum,
                 _weight_channels_last(params[4]), fused)

    def checks():
        return (_same(module._modules, 'channel_attention', 'spatial_attention')
                + _same(ca_modules, 'fc1', 'fc2') + _same(sa_modules, 'conv', 'bn')
                + _same(f1, 'weight', 'bias') + _same(f2, 'weight', 'bias')
                + _same(cv, 'weight') + _same(bp, 'weight', 'bias')
                + _same(buffers, 'running_mean', 'running_var', 'num_batches_tracked')
                + [(bn.__dict__, name, bn.__dict__[name], True)
                   for name in ('training', 'eps', 'momentum')])
    return _run(plan, x, stream, params, bn, bn_train, inplace, rest, key_extra,
                lambda stream, ws, out, run: _cbam_passes(
                    plan, stream, x, ws, out, params, bn, 'train' if bn_train else 'eval',
                    False, residual, run),
                _binder(module, inplace, x, stream, params, rest, plan, checks, fused),
                residual)


def se_forward(x, se, inplace=False, bind=False, residual=None):
    """SE, or None where these kernels do not apply. ``bind``: bind replayed calls to
    ``se`` (:func:`.triton_programs.bind`). ``residual``: the block's tail,
    ``max(SE(x) + residual, 0)``, where ``residual`` is laid out as x (same shape,
    dtype, strides and 16-byte alignment; else None)."""
    modules = se._modules
    f1, f2 = modules['fc1']._parameters, modules['fc2']._parameters
    params = (f1['weight'], f1['bias'], f2['weight'], f2['bias'])
    if not _params_ready(params):
        return None
    if _strides(x) is None:
        x = x.contiguous()
    if residual is not None and not _laid_out_as(residual, x):
        return None
    plan = _plan('se', x, params[0].shape[0], 0)
    stream = current_stream(x.get_device())
    rest = [_counters_for(x, stream, plan.n),
            _accumulators_for(x, stream, plan.n * 2 * plan.hid)]

    def checks():
        return (_same(modules, 'fc1', 'fc2') + _same(f1, 'weight', 'bias')
                + _same(f2, 'weight', 'bias'))
    fused = residual is not None
    return _run(plan, x, stream, params, None, False, inplace, rest, ('se', fused),
                lambda stream, ws, out, run: _se_passes(
                    plan, stream, x, ws, out, params, False, residual, run),
                _binder(se if bind else None, inplace, x, stream, params, rest, plan,
                        checks, fused), residual)
