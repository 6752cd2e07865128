"""The Triton kernels of CBAM's and SE's backward passes (CUDA).

CBAM backward, five launches: :func:`_bwd_pixels` (``dL/dM_s`` per pixel and the output's
share of ``dL/dM_c``), :func:`_bwd_spatial` (BatchNorm's and the convolution's backward on
the small maps), :func:`_bwd_desc_reduce` (the descriptor's share of ``dL/dM_c``),
:func:`_mlp_bwd` (the MLP's weight gradients and ``dL/d pooled``) and :func:`_bwd_dx`
(``dL/dF``). SE backward, three: :func:`_bwd_reduce`, :func:`_mlp_bwd`, :func:`_bwd_dx`.
Parameter gradients are written into the workspace (autograd gets views). The gradient of
a max goes to every element equal to it (ties have probability zero for real values).
"""
import triton
import triton.language as tl

from .triton_forward_kernels import _channel_span, _conv_tap

@triton.jit
def _bwd_pixels(g_ptr, x_ptr, ws_ptr, bws_ptr, cnt_ptr, OFF_A, OFF_S, OFF_Z,
                OFF_STATS, B_DA, B_DZ, B_BNPART, SLOT, N, C, HW, CPS, sxn, sxc, sxhw, sgn,
                sgc, sghw, ATOMIC: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, STAGES: tl.constexpr):
    """With p = g x: da[n, c] += sum_hw p s over the program's CPS channels, ds = sum_c p a.
    Not ATOMIC: stores dz = ds s (1 - s) and the block's (sum dz, sum dz zhat) for
    BatchNorm's backward. ATOMIC: ds is added into dz (zeroed by the forward); the pixel
    block's last channel split (counter SLOT + block index) finishes dz and the sums."""
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
    backward for this pixel block (grid: samples x pixel blocks): ddesc stored, dW added by
    atomics (in the weight's layout), TAPS taps at a time. The partials' sums (dL/d gamma,
    dL/d beta) are read by every program when TRAIN (in dzin), else by the first alone."""
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
    """The descriptor's share of dL/da over a channel block and a span of pixels (one atomic
    per channel): da[n, c] += sum_hw x (ddesc_mean / C + ddesc_max [a x == desc_max])."""
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
def _bwd_reduce(g_ptr, x_ptr, bws_ptr, B_DA, C, HW, sxn, sxc, sxhw, sgn, sgc, sghw,
                hw_per_prog, BLOCK_C: tl.constexpr,
                BLOCK_HW: tl.constexpr, STAGES: tl.constexpr):
    """SE: da[n, c] += sum over a span of hw of g x."""
    pid_nc = tl.program_id(0)
    pid_hw = tl.program_id(1)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    xbase = x_ptr + n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
    gbase = g_ptr + n.to(tl.int64) * sgn + offs_c[:, None].to(tl.int64) * sgc
    acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    hw_begin = pid_hw * hw_per_prog
    for step in tl.range(0, hw_per_prog, BLOCK_HW, num_stages=STAGES):
        offs_hw = hw_begin + step + tl.arange(0, BLOCK_HW)
        mask = mask_c[:, None] & (offs_hw[None, :] < HW)
        hw64 = offs_hw[None, :].to(tl.int64)
        xv = tl.load(xbase + hw64 * sxhw, mask=mask, other=0.0).to(tl.float32)
        gv = tl.load(gbase + hw64 * sghw, mask=mask, other=0.0).to(tl.float32)
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
    """Stores sample n's dL/d hpre (both branches where PAIR) from dL/dh; returns their sum."""
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
    """The MLP's backward for a block of hidden units (grid axis 0) and CPB channels (axis 1):
    the block's dL/d hpre (over all channels; the first channel block stores db1), then for
    its channels dW2's rows, dW1's columns, db2 and dL/d pooled (atomics)."""
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
def _bwd_dx(g_ptr, x_ptr, ws_ptr, bws_ptr, dx_ptr, OFF_A, OFF_S, OFF_DESC,
            OFF_POOLED, B_DDESC, B_DPOOLED, C, HW, sxn, sxc, sxhw, sgn, sgc, sghw,
            HAS_S: tl.constexpr, BLOCK_C: tl.constexpr,
            BLOCK_HW: tl.constexpr, TILES: tl.constexpr, STAGES: tl.constexpr):
    """CBAM: dx = g a s + a (ddesc_mean / C + ddesc_max [a x == desc_max]) + dpooled_avg / HW
    + dpooled_max [x == channel max]; SE: dx = g a + dpooled_avg / HW. dx has x's strides.
    A program covers TILES pixel blocks of its channels (per-channel values loaded once)."""
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
            dx = g * a + gavg
            tl.store(dx_ptr + xoffs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
