"""Launch planning of the Triton kernels: every grid, block size, warp count and workspace
offset of one input signature (shape, strides, dtype, device, alignment), computed once
(:func:`plan_for`) and kept in a :class:`Plan` with the compiled kernels (``compiled``) and
the recorded programs the C++ replay runs (``native``, :mod:`.triton_programs`)."""
import collections

import triton

def strides(t):
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


# Tuning constants, each the fastest in a sweep on an H200 (Faster R-CNN R-50 feature maps
# at 800x1216, batch 2); they change speed only, never results.

# Passes over pixels split the channels over programs where the pixels alone give fewer
# than about PIXEL_PROGRAMS programs (four per SM), each program keeping at least
# MIN_SPLIT_CHANNELS channels, and only up to MAX_SPLIT_PIXELS pixels (N x H x W).
PIXEL_PROGRAMS = 528
MIN_SPLIT_CHANNELS = 64
MAX_SPLIT_PIXELS = 16384
# _bwd_pixels splitting channels (NCHW): steps of 64 channels x 32 pixels, 128 per program
SPLIT_PIX_BLOCK = (64, 32)
SPLIT_PIX_CHANNELS = 128
# (channels, pixels) per step of _spatial_pool splitting the channels and forming M_c
# itself (longer pixel blocks read W2's rows fewer times), indexed by H x W > 2048
GATE_SPLIT_SP_BLOCK = ((16, 256), (8, 512))
# software-pipeline stages of each pass's loop (tl.range's num_stages; of 1-4)
LOOP_STAGES = dict(_pool_mlp=1, _spatial_pool=3, _bwd_pixels=1, _bwd_desc_reduce=3,
                   _bwd_reduce=3, _bwd_dx=1)
# _bwd_dx from DX_TILES_HW pixels per sample: DX_TILES pixel blocks per program, DX_STAGES stages
DX_TILES = 2
DX_TILES_HW = 2048
DX_STAGES = 2
# the pooling pass runs the MLP's first layer in all its programs (atomics) from this many weights
DIRECT_MLP_WEIGHTS = 32768
# the pooling pass over large maps (contiguous NCHW, H x W >= PIX_WIDE_HW): direct, with
# LARGE_POOL_BLOCK (channels, pixels per step), where that makes LARGE_POOL_PROGRAMS or more
LARGE_POOL_BLOCK = (1, 4096)
LARGE_POOL_PROGRAMS = 1024
LARGE_POOL_STAGES = 2
# pixels per step of the pooling pass (contiguous NCHW; 4 channels, or 8 and half as many
# pixels for a direct pass over at most 2048 pixels), and its warps with 4-channel steps
POOL_BLOCK_HW = 1024
POOL_WIDE_WARPS = 8
# (channels, pixels) per step of a direct pooling pass over channels_last inputs
CL_DIRECT_POOL_BLOCK = (16, 128)
# programs of the pooling pass where it runs over spans of H x W (not direct)
POOL_PROGRAMS = 512
# passes over pixel blocks (contiguous NCHW): 128 pixels where that gives WIDE_PROGRAMS
# programs or more, else 64; 64 channels per step from PIX_WIDE_HW pixels per sample, else 32
WIDE_PROGRAMS = 512
PIX_WIDE_HW = 8192
# pixels per program of _bwd_spatial (long, default, short): short where the default makes
# < CONV_BWD_PROGRAMS[1] programs; long (running statistics, W % 16 == 0) if >= [0] programs
CONV_BWD_BLOCKS = (512, 128, 64)
CONV_BWD_PROGRAMS = (200, 132)
# taps of the spatial convolution's dW summed per step in _bwd_spatial (a power of 2)
CONV_BWD_TAPS = 32
# _mlp_bwd: hidden units per program, channels per step of its serial phase, channels per
# program (doubled while there would be more than MLP_BWD_PROGRAMS programs)
MLP_BWD_BLOCK_J = 16
MLP_BWD_BLOCK_DH = 1024
MLP_BWD_CHANNELS = 64
MLP_BWD_PROGRAMS = 128
# programs of the reductions over H x W by channel blocks
REDUCE_PROGRAMS = 1024
# channels per block of _bwd_desc_reduce (128 pixels)
DESC_BLOCK_C = 16
# warps per program for contiguous NCHW inputs (else 4): 8 x 128 tiles run fastest with one
NUM_WARPS = dict(_bwd_dx=1, _cbam_scale=1, _scale_channels=1, _bwd_desc_reduce=1)
# large maps (contiguous NCHW, N x H x W > MAX_SPLIT_PIXELS, H x W >= PIX_WIDE_HW), by
# whether 128-pixel blocks are wide: _bwd_pixels' (channels, pixels) per step, and warps
LARGE_PIX_BLOCK = {True: (32, 128), False: (64, 64)}
LARGE_WARPS = {True: dict(_bwd_pixels=1, _bwd_desc_reduce=2),
               False: dict(_bwd_pixels=2, _bwd_desc_reduce=2)}


def _channel_split(programs, n, hw, c, block_c):
    """(channels per program, channel splits) of a pass over pixels with ``programs``
    programs per split."""
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


class Plan:
    """Launch parameters for one (kind, shape, strides, dtype, device) signature."""

    def __init__(self, kind, x, st, hid, k):
        n, c, h, w = x.shape
        hw = h * w
        self.n, self.c, self.h, self.w, self.hw, self.st, self.hid, self.k = \
            n, c, h, w, hw, st, hid, k
        cl = st[1] == 1  # channels_last: C is the contiguous axis
        cbam = kind == 'cbam'
        # pooling over H x W: channel blocks over all of H x W (direct: the MLP's first layer
        # in every program) or over spans of it (about POOL_PROGRAMS programs, partials)
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
        per = hw_blocks if self.direct else min(max(1, ncb * hw_blocks // POOL_PROGRAMS), hw_blocks)
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
        # _bwd_spatial's (pixels per program, grid) by bn_train (which reads z at every tap)
        long_block, block, short_block = CONV_BWD_BLOCKS
        if n * triton.cdiv(hw, block) < CONV_BWD_PROGRAMS[1]:
            block = short_block
        self.conv_bwd = {bn_train: (b, (n, triton.cdiv(hw, b), 1)) for bn_train, b in (
            (True, block), (False, long_block if w % 16 == 0 and n * triton.cdiv(
                hw, long_block) >= CONV_BWD_PROGRAMS[0] else block))}
        # (channel splits where n * hw <= MAX_SPLIT_PIXELS; longer blocks where it forms M_c)
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
        # counters: per sample (pooling), the convolution's, with channel splits per pixel block
        self.counter_slots = n + 1 + (n * pix_blocks if self.pix_splits > 1 else 0)
        # tiles (channel block x pixel block)
        self.tile_bc, self.tile_bhw = (64, 32) if cl else (8, 128)
        self.tile_grid = (n * triton.cdiv(c, self.tile_bc), triton.cdiv(hw, self.tile_bhw), 1)
        # the backward's last pass (dL/dF): DX_TILES pixel blocks per program from DX_TILES_HW
        self.dx_tiles = DX_TILES if not cl and hw >= DX_TILES_HW else 1
        self.dx_grid = (self.tile_grid[0], triton.cdiv(hw, self.tile_bhw * self.dx_tiles), 1)
        self.red_hw_per_prog, self.red_grid = _reduce_grid(n, c, hw, self.tile_bc, self.tile_bhw)
        # CBAM's descriptor reduction reads per-pixel values per channel block: wide blocks
        self.desc_bc, self.desc_bhw = (64, 32) if cl else (DESC_BLOCK_C, 128)
        self.desc_hw_per_prog, self.desc_grid = _reduce_grid(n, c, hw, self.desc_bc, self.desc_bhw)
        self.mlp_bwd_bj, self.mlp_bwd_cpb = MLP_BWD_BLOCK_J, MLP_BWD_CHANNELS
        while (triton.cdiv(hid, self.mlp_bwd_bj) * triton.cdiv(c, self.mlp_bwd_cpb)
               > MLP_BWD_PROGRAMS):
            self.mlp_bwd_cpb *= 2
        self.mlp_bwd_grid = (triton.cdiv(hid, self.mlp_bwd_bj), triton.cdiv(c, self.mlp_bwd_cpb), 1)
        self.ws, self.ws_size = _layout([
            ('part', 0 if self.direct else self.split * 2 * n * c), ('a', n * c),
            ('pooled', n * 2 * c), ('hpre', n * 2 * hid), ('h', n * hid),
            ('desc', n * 2 * hw if cbam else 0),
            ('z', n * hw if cbam else 0), ('s', n * hw if cbam else 0),
            ('cpart', self.conv_parts * 3 if cbam else 0), ('stats', 2 if cbam else 0)])
        # the parameters' gradients: one unpadded tail of the backward workspace (views)
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
        # recorded programs (inference) and C++ training states by call kind; None: not replayable
        self.native = {}
        o, b = self.ws, self.bws
        pair = cbam
        self.poolmlp_tail = {zero: (
            o['part'], o['a'], o['pooled'], o['hpre'], o['h'], o['desc'] if cbam else 0,
            b['da'], b['dpooled'], b['dconv'] if pair else 0, 2 * k * k, b['dz'] if cbam else 0,
            n, c, hid, hw, *st, self.pool_hw_per_prog, pair, self.direct, zero,
            cbam and self.sp_splits > 1, cbam and self.pix_splits > 1, self.hid_p, self.mlp_bc,
            self.pool_bc, self.pool_bhw, pair and self.gate_in_pool) for zero in (False, True)}
        self.mlpbwd_tail = (o['a'], o['pooled'], o['hpre'], b['da'], b['dpre'], b['dw1'], b['db1'],
                            b['dw2'], b['db2'], b['dpooled'], n, c, hid, self.mlp_bwd_cpb, pair,
                            self.mlp_bwd_bj, 64, min(MLP_BWD_BLOCK_DH, triton.next_power_of_2(c)))


_plans = {}


def plan_for(kind, x, hid, k):
    """The :class:`Plan` of ``x``'s signature for ``kind`` ('cbam' or 'se')."""
    key = (kind, x.shape, x.stride(), x.dtype, x.get_device(), not x.data_ptr() % 16, hid, k)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = Plan(kind, x, strides(x), hid, k)
    return plan
