"""Recording the Triton passes of one call, to replay them from C++.

For one input signature (a :class:`.triton_plan.Plan`) every launch of the CBAM and SE
Triton paths has a fixed kernel, grid and set of integer arguments; only the tensors
change from call to call. The first call of a signature runs in Python with a
:class:`Recorder` as its launcher; the recording becomes a ``Program`` of the C++
extension ``cbam_mmdet.ops._triton_programs`` (csrc/triton_programs.cpp), and later calls
run there: inference in one call (allocations and launches), training as an autograd
node in C++ whose backward runs no Python. The Python path stays the definition and the
fallback: without the extension, under Triton's interpreter, with
``CBAM_MMDET_TRITON_PROGRAMS=0`` (read once, at import; :func:`set_enabled` at run time),
or where a launch does not fit what the extension supports (cluster launches, scratch
memory, argument types).

A program of several launches runs as one CUDA graph launch, except on a capturing
stream (:func:`set_graphs` launches kernel by kernel); a launch sets only the graph's
kernel nodes whose tensor addresses changed.

In training, the parameters' gradients are accumulated into their ``.grad`` by the
call's backward itself ("direct" gradients), as their ``AccumulateGrad`` nodes would, but
without a node per parameter for the autograd engine to schedule. The values and the
accumulation are autograd's: taken as ``.grad`` where it is None, added where it is set,
in ``loss.backward()`` and for the parameters named in ``loss.backward(inputs=...)``.
Where a parameter has hooks that its ``AccumulateGrad`` would run (tensor hooks,
post-accumulate-grad hooks, hooks on its grad accumulator such as
``DistributedDataParallel``'s), its gradient goes through autograd as usual. What
changes: ``torch.autograd.grad`` cannot return a direct gradient (asking for one raises
where the call's backward runs; otherwise torch finds the parameter unused), and
``loss.backward(inputs=[...])`` reaches a plugin's parameters only where its backward
runs for another input too. :func:`set_direct_grads` (False) routes every parameter
gradient through autograd.

A program names every tensor argument by its position in the call's tensor list
("slot"): ``[x, workspace, out, *params, *rest]`` forward, ``[grad_out, x, workspace,
dx, *params, *rest]`` backward. Every other argument is an immediate value, packed as the
compiled kernel's signature types it.
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
              'i32': 0xFFFFFFFF, 'u32': 0xFFFFFFFF, 'i64': (1 << 64) - 1,
              'u64': (1 << 64) - 1}


_enabled = [_ext is not None and not _INTERPRET
            and os.environ.get(ENV_VAR, '1').strip() != '0']


def enabled():
    """Whether calls may replay recorded programs from C++."""
    return _enabled[0] and _ext is not None


def set_enabled(enabled):
    """Replay recorded programs from C++ (``True``, the default where the extension is
    built) or launch every kernel from Python (``False``); returns the previous setting.
    Without the extension it stays False."""
    if not isinstance(enabled, bool):
        raise ValueError(f'enabled must be True or False, got {enabled!r}')
    previous = _enabled[0]
    _enabled[0] = enabled and _ext is not None and not _INTERPRET
    return previous


def not_built():
    """Whether the extension is missing where it would run (not under Triton's
    interpreter, which launches from Python anyway)."""
    return _ext is None and not _INTERPRET


def _switch(name, enabled):
    """Set the extension's setting ``name`` (read by ``_ext.<name>()``, written by
    ``_ext.set_<name>(enabled)``); the previous value, or False without the extension
    (no effect)."""
    if not isinstance(enabled, bool):
        raise ValueError(f'enabled must be True or False, got {enabled!r}')
    if _ext is None:
        return False
    previous = getattr(_ext, name)()
    getattr(_ext, f'set_{name}')(enabled)
    return previous


def set_graphs(enabled):
    """Run recorded programs of several launches as one CUDA graph launch each
    (``True``, the default) or kernel by kernel (``False``); returns the previous
    setting. Without the extension: no effect, returns False."""
    return _switch('graphs', enabled)


def set_direct_grads(enabled):
    """Accumulate the plugins' parameter gradients into ``.grad`` in their backward
    (``True``, the default) or through autograd edges (``False``), for training calls
    from then on; returns the previous setting. Without the extension: no effect,
    returns False."""
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
    """(function, grid, block, shared memory, slots, values) of one recorded launch of the
    compiled kernel ``compiled`` with ``args`` (all of them, constexprs included);
    ``slots`` lists the call's tensors, matched by identity."""
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
        """A C++ ``Program`` of the recorded launches, or None where one cannot be
        replayed (logged nowhere: the Python path simply goes on)."""
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
    """The C++ training state of ``plan`` from its two programs; the gradients are laid
    out as ``params``."""
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
    """The CBAM and SE calls replayed from C++ in this process so far (0 without the
    extension)."""
    return 0 if _ext is None else _ext.replayed_calls()
