"""Recording the Triton passes of one call, to replay them from C++.

For one input signature (a :class:`.triton_plan.Plan`) every launch of the CBAM and SE
Triton paths has a fixed kernel, grid and integer arguments; only the tensors change. The
first call of a signature runs in Python with a :class:`Recorder` as its launcher; the
recording becomes a ``Program`` of the extension ``cbam_mmdet.ops._triton_programs``
(csrc/triton_programs.cpp), which runs later calls: inference in one call, training as a
C++ autograd node whose backward runs no Python. The Python path stays the definition and
the fallback: without the extension, under Triton's interpreter, with
``CBAM_MMDET_TRITON_PROGRAMS=0`` (read at import; :func:`set_enabled` at run time), or
where a launch does not fit the extension (cluster launches, scratch memory, argument
types). In training, the C++ backward accumulates parameter gradients into ``.grad`` itself
("direct" gradients, as ``AccumulateGrad`` would; parameters with hooks go through
autograd), so ``torch.autograd.grad`` cannot return them (asking raises) and
``loss.backward(inputs=[...])`` reaches a plugin's parameters only where its backward runs
for another input too; :func:`set_direct_grads` (False) routes them all through autograd.

A program names each tensor argument by its slot in the call's tensors: ``[x, workspace,
out, *params, *rest]`` forward, ``[grad_out, x, workspace, dx, *params, *rest]`` backward;
other arguments are immediate values, packed as the compiled kernel's signature types them.
"""
import os
import struct

from .triton_launch import _INTERPRET, launch

try:
    from . import _triton_programs as _ext
except ImportError:  # not built (no compiler, or a pure-Python install)
    _ext = None

ENV_VAR = 'CBAM_MMDET_TRITON_PROGRAMS'

_INT_MASKS = {'i1': 0xFF, 'u1': 0xFF, 'i8': 0xFF, 'u8': 0xFF, 'i16': 0xFFFF, 'u16': 0xFFFF,
              'i32': 0xFFFFFFFF, 'u32': 0xFFFFFFFF, 'i64': (1 << 64) - 1, 'u64': (1 << 64) - 1}

_enabled = [_ext is not None and not _INTERPRET and os.environ.get(ENV_VAR, '1').strip() != '0']


def enabled():
    """Whether calls may replay recorded programs from C++."""
    return _enabled[0] and _ext is not None


def set_enabled(enabled):
    """Replay recorded programs from C++ (``True``, the default where the extension is
    built; else it stays False) or launch every kernel from Python; returns the previous."""
    if not isinstance(enabled, bool):
        raise ValueError(f'enabled must be True or False, got {enabled!r}')
    previous = _enabled[0]
    _enabled[0] = enabled and _ext is not None and not _INTERPRET
    return previous


def not_built():
    """Whether the extension is missing where it would run (not under Triton's interpreter)."""
    return _ext is None and not _INTERPRET


def _switch(name, enabled):
    """Set the extension's setting ``name`` (``_ext.set_<name>``); returns the previous
    value (``_ext.<name>()``), or False without the extension (no effect)."""
    if not isinstance(enabled, bool):
        raise ValueError(f'enabled must be True or False, got {enabled!r}')
    if _ext is None:
        return False
    previous = getattr(_ext, name)()
    getattr(_ext, f'set_{name}')(enabled)
    return previous


def set_graphs(enabled):
    """Run recorded programs of several launches as one CUDA graph launch each (``True``,
    the default) or kernel by kernel; returns the previous setting (see :func:`_switch`)."""
    return _switch('graphs', enabled)


def set_direct_grads(enabled):
    """Accumulate parameter gradients into ``.grad`` in the plugins' backward (``True``, the
    default) or through autograd, for later training calls; returns the previous setting."""
    return _switch('direct_grads', enabled)


class Unsupported(Exception):
    """A recorded launch that the C++ launcher cannot replay."""


def pack_immediate(ty, value):
    """The 8-byte little-endian image of a scalar argument of Triton type ``ty``."""
    if ty in _INT_MASKS:
        if not isinstance(value, (bool, int)):
            raise Unsupported(f'{ty} argument {value!r} is not an integer')
        return int(value) & _INT_MASKS[ty]
    if ty in ('fp32', 'f32'):
        return struct.unpack('<I', struct.pack('<f', float(value)))[0]
    if ty == 'fp64':
        return struct.unpack('<Q', struct.pack('<d', float(value)))[0]
    raise Unsupported(f'argument type {ty}')


def launch_spec(compiled, grid, args, slots):
    """(function, grid, block, shared memory, slots, values) of a launch of ``compiled`` with
    ``args`` (constexprs included); ``slots``: the call's tensors, matched by identity."""
    md = compiled.metadata
    if (getattr(md, 'num_ctas', 1) != 1 or getattr(md, 'launch_cooperative_grid', False)
            or getattr(md, 'launch_pdl', False) or getattr(md, 'global_scratch_size', 0)
            or getattr(md, 'profile_scratch_size', 0)):
        raise Unsupported('cluster, cooperative or scratch launch')
    types = list(compiled.src.signature.values())
    if len(types) != len(args):
        raise Unsupported(f'{len(args)} arguments for a signature of {len(types)}')
    ids = {}
    for i, t in enumerate(slots):
        ids.setdefault(id(t), i)
    slot_of, values = [], []
    for ty, arg in zip(types, args):
        if ty == 'constexpr':
            continue
        if not isinstance(ty, str):
            raise Unsupported(f'argument type {ty!r}')
        if ty.startswith('*'):
            if id(arg) not in ids:
                raise Unsupported('a tensor argument outside the call\'s tensors')
            slot_of.append(ids[id(arg)])
            values.append(0)
        else:
            slot_of.append(-1)
            values.append(pack_immediate(ty, arg))
    return (int(compiled.function), [int(g) for g in grid], 32 * md.num_warps, md.shared,
            slot_of, values)


class Recorder:
    """A launcher with :func:`.triton_launch.launch`'s signature that launches and keeps
    each launch's compiled kernel, grid and arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, kernel, grid, cache, key, stream, *args, num_warps=4):
        launch(kernel, grid, cache, key, stream, *args, num_warps=num_warps)
        self.calls.append((cache.get(key), grid, args))

    def program(self, slots):
        """A C++ ``Program`` of the recorded launches, or None where one cannot be replayed."""
        try:
            specs = [launch_spec(compiled, grid, args, slots)
                     for compiled, grid, args in self.calls]
        except (Unsupported, AttributeError, TypeError):
            return None
        program = _ext.Program()
        for spec in specs:
            program.add(*spec)
        return program


def train_state(forward, backward, plan, params):
    """The C++ training state of ``plan``'s two programs, gradients laid out as ``params``."""
    offsets, offset = [], plan.split_sizes[0]
    for size in plan.grad_sizes:
        offsets.append(offset)
        offset += size
    return _ext.TrainState(forward, backward, plan.total_size, offsets,
                           [list(s) for s in plan.grad_shapes],
                           [tuple(r) for r in plan.atomic_regions],
                           [list(p.stride()) for p in params])


def infer(program, x, ws_size, stream, rest):
    return _ext.infer(program, x, ws_size, stream, rest)


def train(state, x, params, stream, rest):
    return _ext.train(state, x, params, stream, rest)


def replayed_calls():
    """The CBAM and SE calls replayed from C++ in this process so far (0 without it)."""
    return 0 if _ext is None else _ext.replayed_calls()
