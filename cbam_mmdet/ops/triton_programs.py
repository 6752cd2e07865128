"""Recording the Triton passes of one call, to replay them from C++.

For one input signature (a :class:`.cbam_triton._Plan`) every launch of the CBAM and SE
Triton paths has a fixed kernel, grid and set of integer arguments; only the tensors
change from call to call. The first call of a signature runs in Python with a
:class:`Recorder` as its launcher; the recording becomes a ``Program`` of the C++
extension ``cbam_mmdet.ops._triton_programs`` (csrc/triton_programs.cpp), and later calls
run there: inference in one call (allocations and launches), training as an autograd
Function in C++ whose backward runs no Python. The Python path stays the definition and
the fallback: without the extension, under Triton's interpreter, with
``CBAM_MMDET_TRITON_PROGRAMS=0``, or where a kernel's launch does not fit what the
extension supports (cluster launches, scratch memory, argument types), calls keep
running in Python.

A replayed call is then bound to its module (:func:`bind`): the module's ``forward``
hands later inputs straight to a C++ ``Bindings`` object, which replays the program
without any Python while the input signature, autograd mode, stream, parameters,
settings and environment variables are those of the bound call, and otherwise returns
None (the Python path then runs and may bind again).

A program of several launches runs as one CUDA graph launch (a quarter to a half of the
host time of one ``cuLaunchKernel`` per kernel), except on a capturing stream;
:func:`set_graphs` (or ``CBAM_MMDET_PROGRAM_GRAPHS=0``) launches kernel by kernel. A
bound call launches graphs of its own, and a launch sets only the kernel nodes whose
arguments (the tensors' addresses) changed since that graph's last launch
(``_ext.graph_nodes_kept()`` counts the others; docs/speed.md, v31).

In training, the parameters' gradients are accumulated into their ``.grad`` by the
call's backward itself ("direct" gradients), as their autograd ``AccumulateGrad`` nodes
would do, but without a node per parameter for the autograd engine to schedule (about
40 us less host time per CBAM call and 20 us per SE call, forward and backward, on an
H200 host; docs/speed.md, v18).
The values and the accumulation are those of autograd: taken as ``.grad`` where it is
None, added where it is set, in ``loss.backward()`` and for the parameters named in
``loss.backward(inputs=...)``. Where a parameter has hooks that its ``AccumulateGrad``
would run (tensor hooks, post-accumulate-grad hooks, hooks on its grad accumulator such
as ``DistributedDataParallel``'s), its gradient goes through autograd as usual. What
changes: ``torch.autograd.grad`` cannot return a direct gradient (asking for one raises
where the call's backward runs; otherwise torch finds the parameter unused: an error, or
None with ``allow_unused=True``),
and ``loss.backward(inputs=[...])`` reaches a plugin's parameters only where its
backward runs for another input too. :func:`set_direct_grads` (or
``CBAM_MMDET_DIRECT_GRADS=0``) routes every parameter gradient through autograd, from
the next forward on.

A program names every tensor argument by its position in the call's tensor list
("slot"): ``[x, workspace, out, *params, *rest]`` forward, ``[grad_out, x, workspace,
dx, *params, *rest]`` backward. Every other argument is an immediate value, packed as the
compiled kernel's signature types it.
"""
import os
import struct

from .dispatch import ENV_VAR as ATTENTION_ENV_VAR
from .triton_launch import _INTERPRET, launch

try:
    from . import _triton_programs as _ext
except ImportError:  # not built (no compiler, or a pure-Python install)
    _ext = None

ENV_VAR = 'CBAM_MMDET_TRITON_PROGRAMS'

_INT_MASKS = {'i1': 0xFF, 'u1': 0xFF, 'i8': 0xFF, 'u8': 0xFF, 'i16': 0xFFFF, 'u16': 0xFFFF,
              'i32': 0xFFFFFFFF, 'u32': 0xFFFFFFFF, 'i64': (1 << 64) - 1,
              'u64': (1 << 64) - 1}


def enabled():
    """Whether calls may replay recorded programs from C++."""
    return (_ext is not None and not _INTERPRET
            and os.environ.get(ENV_VAR, '1').strip() != '0')


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


def train_state(forward, backward, plan, params, residual=False):
    """The C++ training state of ``plan`` (a ``_Plan``) from its two programs; the
    gradients are laid out as ``params``. ``residual``: the block tail, whose forward
    program names the residual after ``rest`` and whose backward names the output and
    the residual's gradient after ``rest``."""
    offsets, offset = [], plan.split_sizes[0]
    for size in plan.grad_sizes:
        offsets.append(offset)
        offset += size
    return _ext.TrainState(forward, backward, plan.total_size, offsets,
                           [list(s) for s in plan.grad_shapes],
                           [tuple(r) for r in plan.atomic_regions],
                           [list(p.stride()) for p in params], residual)


# entries a module's Bindings keep (input signatures and modes: one training and one
# inference signature per image size in a typical loop)
MAX_BINDINGS = 4


def bind(module, owner, train, x, inplace, ws_size, stream, params, rest, checks,
         residual=False):
    """Bind a call to ``module``: later calls that :meth:`Bindings.__call__` finds
    unchanged (``x``'s signature, the autograd mode, the stream, ``checks``: tuples
    ``(dict, key, value, equal)`` of what the call was chosen for, and this module's and
    :mod:`.dispatch`'s environment variables) replay ``owner`` (the recorded inference
    ``Program`` or the ``TrainState``) from C++ without running Python (the plugins'
    ``forward`` tries ``module._bindings`` first). ``residual``: a call of the block's
    tail (``module._bindings(x, residual)``, the residual laid out as x)."""
    bindings = module.__dict__.get('_bindings')
    if bindings is None:
        bindings = module.__dict__['_bindings'] = _ext.Bindings(MAX_BINDINGS)
    bindings.add(owner, train, x, inplace, ws_size, stream, list(params), list(rest),
                 checks, [ATTENTION_ENV_VAR, ENV_VAR], residual)


def infer(program, x, inplace, ws_size, stream, rest):
    return _ext.infer(program, x, inplace, ws_size, stream, rest)


def train(state, x, params, stream, rest):
    return _ext.train(state, x, params, stream, rest)


def replayed_calls(model):
    """The calls of the CBAM and SE modules in ``model`` (an ``nn.Module``) replayed from
    C++ so far: their bound calls' training and inference hits. Counts restart where a
    module's bindings are dropped (``implementation`` or ``inplace`` set)."""
    total = 0
    for module in model.modules():
        bindings = module.__dict__.get('_bindings')
        if bindings is not None:
            total += bindings.train_hits + bindings.infer_hits
    return total
