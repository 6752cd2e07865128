"""The Triton kernels of CBAM's and SE's forward passes (CUDA).

CBAM forward, four launches: :func:`_pool_mlp` (avg and max over H x W and the shared
MLP's first layer; the last program of each sample finishes the MLP), :func:`_spatial_pool`
([max; mean] over C of ``M_c F``, never stored), :func:`_spatial_conv` (the 7x7
convolution, BatchNorm and sigmoid, ``M_s``; with batch statistics the last program
combines the blocks' statistics and updates the running ones) and :func:`_cbam_scale`
(``out = F M_c M_s``). SE forward, two: :func:`_pool_mlp` and :func:`_scale_channels`.

CBAM reads the big map ``F`` (N, C, H, W) three times and writes it once (the floor for a
pooling that must finish before the scale), SE twice and once. Kernels read any strides
where H and W merge into one axis (contiguous NCHW, channels_last), accumulate in float32
and write ``F``'s dtype; the small maps are float32. "Last program to finish" steps count
finished programs in an int32 counter (acquire-release, reset by the last) after a barrier;
every other atomic only accumulates (relaxed).
"""
import triton
import triton.language as tl

@triton.jit
def _hidden(ws_ptr, b1_ptr, n, h_avg, h_max, offs_j, mask_j, OFF_HPRE, OFF_H, HID,
            PAIR: tl.constexpr):
    """hpre[n] = (W1 avg + b1, W1 max + b1), h[n] = relu(hpre_avg) + relu(hpre_max) (PAIR,
    CBAM) or relu(hpre_avg) (SE)."""
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
    """Sample n's pooled[n] = (avg, max) from the partials over SPLIT spans of H x W, then
    the MLP's first layer (:func:`_hidden`)."""
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
    """a[n, offs_c] = sigmoid(W2 h[n] + 2 b2) (PAIR: both descriptors' outputs summed) or
    sigmoid(W2 h[n] + b2)."""
    offs_j = tl.arange(0, HID_P)
    mask_j = offs_j < HID
    h = tl.load(ws_ptr + OFF_H + n * HID + offs_j, mask=mask_j, other=0.0)
    w2 = tl.load(w2_ptr + offs_c[:, None] * HID + offs_j[None, :],
                 mask=mask_c[:, None] & mask_j[None, :], other=0.0)
    b2 = tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0)
    return tl.sigmoid(tl.sum(w2 * h[None, :], axis=1) + (2.0 * b2 if PAIR else b2))


@triton.jit
def _channel_span(C, CPS):
    """(sample, channel split, first channel, end channel) of a program whose grid axis 0
    runs over samples x splits of CPS channels."""
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
    """avg and max of x over H x W and the shared MLP's first layer. DIRECT (a program
    covers all of H x W for its channels): it stores its channels' pooled
    values and adds W1[:, its channels] (avg, max) into the per-sample accumulator ``acc``
    (zero between calls); else it stores partials over its span and the first layer runs
    in the sample's last program (:func:`_mlp_sample`). The last program of sample n (a
    counter per sample) stores hpre[n], h[n] (:func:`_hidden`), with GATE a[n] = M_c
    (:func:`_channel_gate`), zeroes the backward's atomic accumulators of sample n
    (ZERO_GRADS; the convolution's with n == 0; dL/ds with ZERO_DS) and sets its
    descriptor to (-inf, 0) for atomic maxima and sums (INIT_DESC)."""
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
    """a[n, c] = M_c (A_READY: from :func:`_pool_mlp`; else :func:`_channel_gate`, stored by
    the first pixel block), desc[n, :, hw] = (max_c, mean_c) of a x over the program's CPS
    channels: stored, or with ATOMIC an atomic max and sum into the descriptor."""
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
    """stats = (mean, 1 / sqrt(var + eps)) of the batch from the blocks' (count, mean, M2)
    (Chan et al.); UPDATE: the running statistics too, unbiased variance as BatchNorm."""
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
    """Offset of the (1, 2, K, K) weight's [0, ch, ky, kx]: contiguous or channels_last (W_CL)."""
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
    """z[n, hw] = conv_KxK(desc[n]) (no bias). Not TRAIN: stores s = sigmoid(BN(z)), with
    SAVE_Z also z and (mean, 1 / std). TRAIN: stores z and the block's (count, mean, M2) of
    z; the last program (counter SLOT) computes the statistics (:func:`_bn_stats`)."""
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
def _cbam_scale(x_ptr, ws_ptr, out_ptr, bw_ptr, bb_ptr, OFF_A, OFF_Z, OFF_STATS,
                OFF_S, C, HW, sxn, sxc, sxhw, S_READY: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """out[n, c, hw] = x a[n, c] s[n, hw] (x's strides) over one channel x pixel tile; s from
    :func:`_spatial_conv` (S_READY) or formed here, sigmoid((z - mean) / std gamma + beta),
    and stored by the first channel block."""
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
    tl.store(out_ptr + offs, y.to(xv.dtype), mask=mask)


@triton.jit
def _scale_channels(x_ptr, ws_ptr, out_ptr, w2_ptr, b2_ptr, OFF_A, OFF_H, C, HID, HW,
                    sxn, sxc, sxhw, HID_P: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """SE: a[n, c] by :func:`_channel_gate` (stored by the first pixel block), then
    out = x a[n, c] (x's strides)."""
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
    tl.store(out_ptr + offs, y.to(xv.dtype), mask=mask)
