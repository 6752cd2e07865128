"""Fused Triton kernels for CBAM and SE on CUDA, forward and backward.

The big feature map ``x`` (N, C, H, W) is touched by these passes only:

forward (CBAM): one read for the avg+max channel descriptors (``_channel_pool``), one read
for the [max; mean] over channels of ``M_c x`` (``_spatial_pool``, ``M_c x`` is never
stored), one read and one write for ``out = x * M_c * M_s`` (``_scale``): the floor of
three reads and one write. SE: one read, then one read and one write.

backward (CBAM): one read of (grad, x) for ``dL/dM_s`` and the output's share of
``dL/dM_c`` (``_bwd_reduce``), one read of x for the spatial descriptor's share of
``dL/dM_c`` (``_bwd_spatial``), one read of (grad, x) and one write of ``dL/dx``
(``_bwd_dx``). SE: two reads, then two reads and one write.

The small maps (shared MLP, 7x7 convolution, BatchNorm, sigmoids) are ordinary PyTorch
in float32 outside autocast; the backward recomputes them from the saved descriptors and
differentiates them with autograd. Kernels read any strides where H and W merge into one
axis (contiguous NCHW and channels_last), accumulate in float32, and write ``x.dtype``.

Maxima: the gradient of a max goes to every element equal to it (the reference gives it
to one element or splits it between ties; ties have probability zero for real-valued
activations).
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .cbam_cpu import mlp_logits, no_autocast


# ---- kernels ---------------------------------------------------------------------------

@triton.jit
def _channel_pool(x_ptr, avg_ptr, max_ptr, C, HW, sxn, sxc, sxhw, hw_per_prog, inv_hw,
                  HAS_MAX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """avg_ptr[n, c] += sum over a span of hw / HW; max_ptr[n, c] = max(it, max over span)."""
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
    for start in range(hw_begin, hw_begin + hw_per_prog, BLOCK_HW):
        offs_hw = start + tl.arange(0, BLOCK_HW)
        mask = mask_c[:, None] & (offs_hw[None, :] < HW)
        v = tl.load(base + offs_hw[None, :].to(tl.int64) * sxhw, mask=mask,
                    other=0.0).to(tl.float32)
        acc_sum += v
        if HAS_MAX:
            acc_max = tl.maximum(acc_max, tl.where(mask, v, float('-inf')))
    out = n * C + offs_c
    tl.atomic_add(avg_ptr + out, tl.sum(acc_sum, axis=1) * inv_hw, mask=mask_c)
    if HAS_MAX:
        tl.atomic_max(max_ptr + out, tl.max(acc_max, axis=1), mask=mask_c)


@triton.jit
def _spatial_pool(x_ptr, a_ptr, desc_ptr, C, HW, sxn, sxc, sxhw,
                  BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """desc[n, 0, hw] = max_c a[n, c] x[n, c, hw]; desc[n, 1, hw] = mean_c of the same."""
    n = tl.program_id(0)
    offs_hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_hw = offs_hw < HW
    base = x_ptr + n.to(tl.int64) * sxn + offs_hw[None, :].to(tl.int64) * sxhw
    acc_sum = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    acc_max = tl.full((BLOCK_C, BLOCK_HW), float('-inf'), dtype=tl.float32)
    for start in range(0, C, BLOCK_C):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_hw[None, :]
        a = tl.load(a_ptr + n * C + offs_c, mask=mask_c, other=0.0)
        y = tl.load(base + offs_c[:, None].to(tl.int64) * sxc, mask=mask,
                    other=0.0).to(tl.float32) * a[:, None]
        acc_sum += y
        acc_max = tl.maximum(acc_max, tl.where(mask, y, float('-inf')))
    out = desc_ptr + n * 2 * HW + offs_hw
    tl.store(out, tl.max(acc_max, axis=0), mask=mask_hw)
    tl.store(out + HW, tl.sum(acc_sum, axis=0) / C, mask=mask_hw)


@triton.jit
def _scale(x_ptr, a_ptr, s_ptr, out_ptr, C, HW, sxn, sxc, sxhw,
           HAS_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """out = x * a[n, c] (* s[n, hw]); out has x's strides."""
    pid_nc = tl.program_id(0)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_c = offs_c < C
    mask_hw = offs_hw < HW
    mask = mask_c[:, None] & mask_hw[None, :]
    offs = (n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
            + offs_hw[None, :].to(tl.int64) * sxhw)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    a = tl.load(a_ptr + n * C + offs_c, mask=mask_c, other=0.0)
    y = x.to(tl.float32) * a[:, None]
    if HAS_S:
        s = tl.load(s_ptr + n * HW + offs_hw, mask=mask_hw, other=0.0)
        y = y * s[None, :]
    tl.store(out_ptr + offs, y.to(x.dtype), mask=mask)


@triton.jit
def _bwd_reduce(g_ptr, x_ptr, a_ptr, s_ptr, ds_ptr, da_ptr, C, HW, sxn, sxc, sxhw,
                sgn, sgc, sghw, hw_per_prog,
                HAS_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """With p = g * x: ds[n, hw] += sum_c p a[n, c]; da[n, c] += sum_hw p (* s[n, hw])."""
    pid_nc = tl.program_id(0)
    pid_hw = tl.program_id(1)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    a = tl.load(a_ptr + n * C + offs_c, mask=mask_c, other=0.0)
    xbase = x_ptr + n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
    gbase = g_ptr + n.to(tl.int64) * sgn + offs_c[:, None].to(tl.int64) * sgc
    acc_a = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    hw_begin = pid_hw * hw_per_prog
    for start in range(hw_begin, hw_begin + hw_per_prog, BLOCK_HW):
        offs_hw = start + tl.arange(0, BLOCK_HW)
        mask_hw = offs_hw < HW
        mask = mask_c[:, None] & mask_hw[None, :]
        hw64 = offs_hw[None, :].to(tl.int64)
        x = tl.load(xbase + hw64 * sxhw, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(gbase + hw64 * sghw, mask=mask, other=0.0).to(tl.float32)
        p = g * x
        if HAS_S:
            s = tl.load(s_ptr + n * HW + offs_hw, mask=mask_hw, other=0.0)
            tl.atomic_add(ds_ptr + n * HW + offs_hw, tl.sum(p * a[:, None], axis=0),
                          mask=mask_hw)
            acc_a += p * s[None, :]
        else:
            acc_a += p
    tl.atomic_add(da_ptr + n * C + offs_c, tl.sum(acc_a, axis=1), mask=mask_c)


@triton.jit
def _bwd_spatial(x_ptr, a_ptr, desc_ptr, ddesc_ptr, da_ptr, C, HW, sxn, sxc, sxhw,
                 hw_per_prog, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """da[n, c] += sum_hw x * (ddesc_mean / C + ddesc_max * [a x == desc_max])."""
    pid_nc = tl.program_id(0)
    pid_hw = tl.program_id(1)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    a = tl.load(a_ptr + n * C + offs_c, mask=mask_c, other=0.0)
    xbase = x_ptr + n.to(tl.int64) * sxn + offs_c[:, None].to(tl.int64) * sxc
    acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    hw_begin = pid_hw * hw_per_prog
    for start in range(hw_begin, hw_begin + hw_per_prog, BLOCK_HW):
        offs_hw = start + tl.arange(0, BLOCK_HW)
        mask_hw = offs_hw < HW
        mask = mask_c[:, None] & mask_hw[None, :]
        x = tl.load(xbase + offs_hw[None, :].to(tl.int64) * sxhw, mask=mask,
                    other=0.0).to(tl.float32)
        dbase = n * 2 * HW + offs_hw
        mx = tl.load(desc_ptr + dbase, mask=mask_hw, other=0.0)
        gmx = tl.load(ddesc_ptr + dbase, mask=mask_hw, other=0.0)
        gmean = tl.load(ddesc_ptr + dbase + HW, mask=mask_hw, other=0.0) / C
        y = x * a[:, None]
        w = gmean[None, :] + tl.where(y == mx[None, :], gmx[None, :], 0.0)
        acc += tl.where(mask, x * w, 0.0)
    tl.atomic_add(da_ptr + n * C + offs_c, tl.sum(acc, axis=1), mask=mask_c)


@triton.jit
def _bwd_dx(g_ptr, x_ptr, a_ptr, s_ptr, desc_ptr, ddesc_ptr, gavg_ptr, gmax_ptr, cmax_ptr,
            dx_ptr, C, HW, sxn, sxc, sxhw, sgn, sgc, sghw,
            HAS_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """dx = g a s + a (ddesc_mean / C + ddesc_max [a x == desc_max]) + gavg / HW
    + gmax [x == channel max]  (SE: dx = g a + gavg / HW). dx has x's strides."""
    pid_nc = tl.program_id(0)
    num_cb = tl.cdiv(C, BLOCK_C)
    n = pid_nc // num_cb
    offs_c = (pid_nc % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask_c = offs_c < C
    mask_hw = offs_hw < HW
    mask = mask_c[:, None] & mask_hw[None, :]
    c64 = offs_c[:, None].to(tl.int64)
    hw64 = offs_hw[None, :].to(tl.int64)
    n64 = n.to(tl.int64)
    xoffs = n64 * sxn + c64 * sxc + hw64 * sxhw
    xr = tl.load(x_ptr + xoffs, mask=mask, other=0.0)
    x = xr.to(tl.float32)
    g = tl.load(g_ptr + n64 * sgn + c64 * sgc + hw64 * sghw, mask=mask,
                other=0.0).to(tl.float32)
    cidx = n * C + offs_c
    a = tl.load(a_ptr + cidx, mask=mask_c, other=0.0)[:, None]
    gavg = tl.load(gavg_ptr + cidx, mask=mask_c, other=0.0)[:, None]
    if HAS_S:
        s = tl.load(s_ptr + n * HW + offs_hw, mask=mask_hw, other=0.0)[None, :]
        dbase = n * 2 * HW + offs_hw
        mx = tl.load(desc_ptr + dbase, mask=mask_hw, other=0.0)[None, :]
        gmx = tl.load(ddesc_ptr + dbase, mask=mask_hw, other=0.0)[None, :]
        gmean = tl.load(ddesc_ptr + dbase + HW, mask=mask_hw, other=0.0)[None, :] / C
        cmax = tl.load(cmax_ptr + cidx, mask=mask_c, other=0.0)[:, None]
        gmax = tl.load(gmax_ptr + cidx, mask=mask_c, other=0.0)[:, None]
        dy = g * s + gmean + tl.where(x * a == mx, gmx, 0.0)
        dx = dy * a + gavg / HW + tl.where(x == cmax, gmax, 0.0)
    else:
        dx = g * a + gavg / HW
    tl.store(dx_ptr + xoffs, dx.to(xr.dtype), mask=mask)


@triton.jit
def _channel_pool_partial(x_ptr, part_ptr, N, C, HW, sxn, sxc, sxhw, hw_per_prog,
                          BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """part[split, 0, n, c] = sum, part[split, 1, n, c] = max over one span of hw
    (no atomics, so no initialised buffer: one launch)."""
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
    for start in range(hw_begin, hw_begin + hw_per_prog, BLOCK_HW):
        offs_hw = start + tl.arange(0, BLOCK_HW)
        mask = mask_c[:, None] & (offs_hw[None, :] < HW)
        v = tl.load(base + offs_hw[None, :].to(tl.int64) * sxhw, mask=mask,
                    other=0.0).to(tl.float32)
        acc_sum += v
        acc_max = tl.maximum(acc_max, tl.where(mask, v, float('-inf')))
    out = part_ptr + pid_hw * 2 * N * C + n * C + offs_c
    tl.store(out, tl.sum(acc_sum, axis=1), mask=mask_c)
    tl.store(out + N * C, tl.max(acc_max, axis=1), mask=mask_c)


@triton.jit
def _channel_mlp(part_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, a_ptr, N, C, HID, HW, SPLIT,
                 PAIR: tl.constexpr, HID_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """a[n] = sigmoid(W2 (relu(W1 avg + b1) + relu(W1 max + b1)) + 2 b2) (PAIR, CBAM)
    or sigmoid(W2 relu(W1 avg + b1) + b2) (SE), avg and max reduced from the partials."""
    n = tl.program_id(0)
    offs_j = tl.arange(0, HID_P)
    mask_j = offs_j < HID
    h_avg = tl.zeros((HID_P,), dtype=tl.float32)
    h_max = tl.zeros((HID_P,), dtype=tl.float32)
    for start in range(0, C, BLOCK_C):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        d_sum = tl.zeros((BLOCK_C,), dtype=tl.float32)
        d_max = tl.full((BLOCK_C,), float('-inf'), dtype=tl.float32)
        for k in range(0, SPLIT):
            p = part_ptr + k * 2 * N * C + n * C + offs_c
            d_sum += tl.load(p, mask=mask_c, other=0.0)
            if PAIR:
                d_max = tl.maximum(d_max, tl.load(p + N * C, mask=mask_c, other=0.0))
        w1 = tl.load(w1_ptr + offs_j[:, None] * C + offs_c[None, :],
                     mask=mask_j[:, None] & mask_c[None, :], other=0.0)
        h_avg += tl.sum(w1 * (d_sum / HW)[None, :], axis=1)
        if PAIR:
            h_max += tl.sum(w1 * tl.where(mask_c, d_max, 0.0)[None, :], axis=1)
    b1 = tl.load(b1_ptr + offs_j, mask=mask_j, other=0.0)
    h = tl.maximum(h_avg + b1, 0.0)
    if PAIR:
        h += tl.maximum(h_max + b1, 0.0)
    for start in range(0, C, BLOCK_C):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        w2 = tl.load(w2_ptr + offs_c[:, None] * HID + offs_j[None, :],
                     mask=mask_c[:, None] & mask_j[None, :], other=0.0)
        b2 = tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0)
        logit = tl.sum(w2 * h[None, :], axis=1) + (2.0 * b2 if PAIR else b2)
        tl.store(a_ptr + n * C + offs_c, tl.sigmoid(logit), mask=mask_c)


@triton.jit
def _spatial_gate(desc_ptr, w_ptr, rm_ptr, rv_ptr, bw_ptr, bb_ptr, s_ptr, H, W, eps,
                  K: tl.constexpr, BLOCK: tl.constexpr):
    """s[n, hw] = sigmoid(BN_eval(conv_KxK(desc[n]))), BN from running statistics."""
    n = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    HW = H * W
    mask = offs < HW
    y = offs // W
    x = offs % W
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for ch in tl.static_range(2):
        base = desc_ptr + (n * 2 + ch) * HW
        for ky in tl.static_range(K):
            yy = y + (ky - K // 2)
            row_ok = mask & (yy >= 0) & (yy < H)
            for kx in tl.static_range(K):
                xx = x + (kx - K // 2)
                ok = row_ok & (xx >= 0) & (xx < W)
                wv = tl.load(w_ptr + (ch * K + ky) * K + kx)
                acc += wv * tl.load(base + yy * W + xx, mask=ok, other=0.0)
    rm = tl.load(rm_ptr).to(tl.float32)
    rv = tl.load(rv_ptr).to(tl.float32)
    scale = tl.load(bw_ptr).to(tl.float32) / tl.sqrt(rv + eps)
    shift = tl.load(bb_ptr).to(tl.float32) - rm * scale
    tl.store(s_ptr + n * HW + offs, tl.sigmoid(acc * scale + shift), mask=mask)


# ---- launch helpers --------------------------------------------------------------------

def _strides(t):
    """(stride_n, stride_c, stride_hw), or None when H and W do not merge into one axis."""
    sn, sc, sh, sw = t.stride()
    h, w = t.shape[2:]
    if h == 1:
        return sn, sc, sw
    if w == 1 or sh == sw * w:
        return sn, sc, sw if w > 1 else sh
    return None


def _prepare(x):
    """x with mergeable H, W (a copy in the worst case) and its strides."""
    st = _strides(x)
    if st is None:
        x = x.contiguous()
        st = _strides(x)
    return x, st


def _tile(strides):
    """(BLOCK_C, BLOCK_HW): wide along the contiguous axis."""
    return (64, 32) if strides[1] == 1 else (8, 128)


def _spread(c_blocks_times_n, hw, block_hw, target=1024):
    """hw per program so that about ``target`` programs share a reduction over hw."""
    hw_blocks = triton.cdiv(hw, block_hw)
    per = max(1, (c_blocks_times_n * hw_blocks) // target)
    per = min(per, hw_blocks)
    hw_per_prog = per * block_hw
    return hw_per_prog, triton.cdiv(hw, hw_per_prog)


def channel_pool(x, st, with_max=True):
    """``(2, N, C)`` float32 [mean over HW; max over HW] (row 1 unset without max)."""
    n, c = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    pooled = torch.empty((2, n, c), device=x.device, dtype=torch.float32)
    pooled[0].zero_()
    if with_max:
        pooled[1].fill_(float('-inf'))
    bc, bhw = _tile(st)
    ncb = n * triton.cdiv(c, bc)
    hw_per_prog, hw_progs = _spread(ncb, hw, bhw)
    _channel_pool[(ncb, hw_progs)](x, pooled[0], pooled[1], c, hw, *st, hw_per_prog,
                                   1.0 / hw, HAS_MAX=with_max, BLOCK_C=bc, BLOCK_HW=bhw)
    return pooled


def spatial_pool(x, st, a):
    """``(N, 2, H, W)`` float32 [max_c a x; mean_c a x]."""
    n, c, h, w = x.shape
    desc = torch.empty((n, 2, h, w), device=x.device, dtype=torch.float32)
    bc, bhw = (64, 32) if st[1] == 1 else (16, 128)
    _spatial_pool[(n, triton.cdiv(h * w, bhw))](x, a, desc, c, h * w, *st,
                                                 BLOCK_C=bc, BLOCK_HW=bhw)
    return desc


def scale(x, st, a, s=None):
    """``x * a[:, :, None, None] (* s)`` in one pass, in x's dtype and memory layout."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    bc, bhw = _tile(st)
    grid = (n * triton.cdiv(c, bc), triton.cdiv(h * w, bhw))
    _scale[grid](x, a, s if s is not None else a, out, c, h * w, *st,
                 HAS_S=s is not None, BLOCK_C=bc, BLOCK_HW=bhw)
    return out


# ---- the small maps --------------------------------------------------------------------

def _small_map_grads(fn, inp, params, needs, grad_out, x):
    """Gradients of a small float32 map ``fn(inp, *params)`` (the MLP or the spatial
    conv + BN) by re-running it under autograd: ``(d inp, [d param or None])``;
    ``needs[i]`` says whether ``params[i]`` wants a gradient."""
    with torch.enable_grad(), no_autocast(x):
        inp_ = inp.detach().requires_grad_()
        params_ = [t.detach().requires_grad_(need) for t, need in zip(params, needs)]
        out = fn(inp_, *params_)
        wanted = [inp_] + [p for p in params_ if p.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out))
    d_inp = next(grads).contiguous()
    return d_inp, [next(grads) if p.requires_grad else None for p in params_]


def _channel_map(pooled, fc1_w, fc1_b, fc2_w, fc2_b, pair):
    """sigmoid(MLP(avg) + MLP(max)) for CBAM (pair=True), sigmoid(MLP(avg)) for SE."""
    hidden = F.relu(F.linear(pooled if pair else pooled[0], fc1_w, fc1_b))
    logits = F.linear(hidden, fc2_w, fc2_b)
    return torch.sigmoid(logits[0] + logits[1] if pair else logits)


def _spatial_map(desc, conv_w, bn_w, bn_b, bn, training, update):
    """sigmoid(BN(conv(desc))), BatchNorm in batch statistics when training (running
    statistics updated only when ``update``), else in running statistics."""
    y = F.conv2d(desc, conv_w, None, 1, conv_w.shape[-1] // 2)
    if training:
        rm, rv = (bn.running_mean, bn.running_var) if update else (None, None)
        if update and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        y = F.batch_norm(y, rm, rv, bn_w, bn_b, True, bn.momentum, bn.eps)
    else:
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn_w, bn_b, False, 0.0,
                         bn.eps)
    return torch.sigmoid(y).view(desc.shape[0], -1)


def _bn_training(bn):
    return bn.training or bn.running_mean is None


# ---- autograd --------------------------------------------------------------------------

class _CBAMFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, fc1_w, fc1_b, fc2_w, fc2_b, conv_w, bn_w, bn_b, bn):
        x, st = _prepare(x)
        n, c, h, w = x.shape
        pooled = channel_pool(x, st)
        with no_autocast(x):
            a = _channel_map(pooled, fc1_w, fc1_b, fc2_w, fc2_b, pair=True)
            desc = spatial_pool(x, st, a)
            training = _bn_training(bn)
            s = _spatial_map(desc, conv_w, bn_w, bn_b, bn, training, update=True)
        out = scale(x, st, a, s)
        ctx.save_for_backward(x, pooled, a, desc, s, fc1_w, fc1_b, fc2_w, fc2_b, conv_w,
                              bn_w, bn_b)
        ctx.bn, ctx.training, ctx.st = bn, training, st
        return out

    @staticmethod
    def backward(ctx, g):
        (x, pooled, a, desc, s, fc1_w, fc1_b, fc2_w, fc2_b, conv_w, bn_w,
         bn_b) = ctx.saved_tensors
        st = ctx.st
        n, c, h, w = x.shape
        hw = h * w
        if _strides(g) is None:
            g = g.contiguous()
        sg = _strides(g)
        bc, bhw = _tile(st)
        ncb = n * triton.cdiv(c, bc)
        hw_per_prog, hw_progs = _spread(ncb, hw, bhw)
        ds = torch.zeros((n, hw), device=x.device, dtype=torch.float32)
        da = torch.zeros((n, c), device=x.device, dtype=torch.float32)
        _bwd_reduce[(ncb, hw_progs)](g, x, a, s, ds, da, c, hw, *st, *sg, hw_per_prog,
                                     HAS_S=True, BLOCK_C=bc, BLOCK_HW=bhw)
        needs = ctx.needs_input_grad
        ddesc, sp_grads = _small_map_grads(
            lambda d, *p: _spatial_map(d, *p, ctx.bn, ctx.training, update=False),
            desc, (conv_w, bn_w, bn_b), needs[5:8], ds, x)
        _bwd_spatial[(ncb, hw_progs)](x, a, desc, ddesc, da, c, hw, *st, hw_per_prog,
                                      BLOCK_C=bc, BLOCK_HW=bhw)
        dpooled, ch_grads = _small_map_grads(
            lambda d, *p: _channel_map(d, *p, pair=True),
            pooled, (fc1_w, fc1_b, fc2_w, fc2_b), needs[1:5], da, x)
        dx = None
        if needs[0]:
            dx = torch.empty_like(x)
            grid = (ncb, triton.cdiv(hw, bhw))
            _bwd_dx[grid](g, x, a, s, desc, ddesc, dpooled[0], dpooled[1], pooled[1], dx,
                          c, hw, *st, *sg, HAS_S=True, BLOCK_C=bc, BLOCK_HW=bhw)
        return (dx, *ch_grads, *sp_grads, None)


class _SEFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, fc1_w, fc1_b, fc2_w, fc2_b):
        x, st = _prepare(x)
        pooled = channel_pool(x, st, with_max=False)
        with no_autocast(x):
            a = _channel_map(pooled, fc1_w, fc1_b, fc2_w, fc2_b, pair=False)
        out = scale(x, st, a)
        ctx.save_for_backward(x, pooled, a, fc1_w, fc1_b, fc2_w, fc2_b)
        ctx.st = st
        return out

    @staticmethod
    def backward(ctx, g):
        x, pooled, a, fc1_w, fc1_b, fc2_w, fc2_b = ctx.saved_tensors
        st = ctx.st
        n, c, h, w = x.shape
        hw = h * w
        if _strides(g) is None:
            g = g.contiguous()
        sg = _strides(g)
        bc, bhw = _tile(st)
        ncb = n * triton.cdiv(c, bc)
        hw_per_prog, hw_progs = _spread(ncb, hw, bhw)
        da = torch.zeros((n, c), device=x.device, dtype=torch.float32)
        _bwd_reduce[(ncb, hw_progs)](g, x, a, a, a, da, c, hw, *st, *sg, hw_per_prog,
                                     HAS_S=False, BLOCK_C=bc, BLOCK_HW=bhw)
        needs = ctx.needs_input_grad
        dpooled, ch_grads = _small_map_grads(
            lambda d, *p: _channel_map(d, *p, pair=False),
            pooled, (fc1_w, fc1_b, fc2_w, fc2_b), needs[1:5], da, x)
        dx = None
        if needs[0]:
            dx = torch.empty_like(x)
            grid = (ncb, triton.cdiv(hw, bhw))
            _bwd_dx[grid](g, x, a, a, a, a, dpooled[0], a, a, dx, c, hw, *st, *sg,
                          HAS_S=False, BLOCK_C=bc, BLOCK_HW=bhw)
        return (dx, *ch_grads)


# ---- entry points ---------------------------------------------------------------------

def _params(module):
    return [p.float() for p in (module.fc1.weight, module.fc1.bias, module.fc2.weight,
                                module.fc2.bias)]


def _records_grad(x, module):
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in module.parameters()))


def _channel_attention_map(x, st, fc1, fc2, pair):
    """(N, C) float32 M_c from two launches: partial pooling, then the fused MLP."""
    n, c, h, w = x.shape
    hw = h * w
    bc, bhw = (64, 32) if st[1] == 1 else (4, 256)
    ncb = n * triton.cdiv(c, bc)
    hw_per_prog, split = _spread(ncb, hw, bhw, target=512)
    part = torch.empty((split, 2, n, c), device=x.device, dtype=torch.float32)
    _channel_pool_partial[(ncb, split)](x, part, n, c, hw, *st, hw_per_prog,
                                        BLOCK_C=bc, BLOCK_HW=bhw)
    a = torch.empty((n, c), device=x.device, dtype=torch.float32)
    hid = fc1.weight.shape[0]
    hid_p = triton.next_power_of_2(hid)
    _channel_mlp[(n,)](part, fc1.weight, fc1.bias, fc2.weight, fc2.bias, a, n, c, hid, hw,
                       split, PAIR=pair, HID_P=hid_p, BLOCK_C=max(16, 4096 // hid_p))
    return a


def _inference_ready(x, modules):
    """The launch-lean inference path reads the weights as contiguous float32."""
    for m in modules:
        for p in m.parameters():
            if p.dtype != torch.float32 or not p.is_contiguous():
                return False
    return True


def cbam_inference(x, channel_attention, spatial_attention):
    """CBAM without autograd in five launches: pooling, MLP, spatial pooling, gate, scale."""
    x, st = _prepare(x)
    n, c, h, w = x.shape
    a = _channel_attention_map(x, st, channel_attention.fc1, channel_attention.fc2, True)
    desc = spatial_pool(x, st, a)
    sa = spatial_attention
    bn = sa.bn
    s = torch.empty((n, h * w), device=x.device, dtype=torch.float32)
    block = 256
    _spatial_gate[(n, triton.cdiv(h * w, block))](
        desc, sa.conv.weight, bn.running_mean, bn.running_var, bn.weight, bn.bias, s, h, w,
        bn.eps, K=sa.conv.weight.shape[-1], BLOCK=block)
    return scale(x, st, a, s)


def se_inference(x, se):
    """SE without autograd in three launches: pooling, MLP, scale."""
    x, st = _prepare(x)
    a = _channel_attention_map(x, st, se.fc1, se.fc2, False)
    return scale(x, st, a)


def cbam_forward(x, channel_attention, spatial_attention):
    """CBAM with the default options (see :func:`cbam_mmdet.ops.cbam_cpu.cbam_forward`)."""
    sa = spatial_attention
    if (not _records_grad(x, channel_attention) and not _records_grad(x, sa)
            and not _bn_training(sa.bn) and _inference_ready(x, (channel_attention, sa))):
        return cbam_inference(x, channel_attention, sa)
    return _CBAMFunction.apply(x, *_params(channel_attention), sa.conv.weight.float(),
                               sa.bn.weight.float(), sa.bn.bias.float(), sa.bn)


def se_forward(x, se):
    """SE (see :func:`cbam_mmdet.ops.cbam_cpu.se_forward`)."""
    if not _records_grad(x, se) and _inference_ready(x, (se,)):
        return se_inference(x, se)
    return _SEFunction.apply(x, *_params(se))
