"""CUDA-graph replay of a plugin's inference fast path (one graph per input signature).

Used with ``implementation='graph'`` (off by default since the Triton paths launch three
kernels per CBAM call and two per SE call, docs/speed.md v5). On a fast GPU a
detector's inference step is bound by host time; replaying a captured CUDA graph costs
one launch, so a call becomes three host operations:

1. copy the input into the graph's static input (one extra read and write of the
   feature map),
2. replay the graph (the fast path as captured: Triton kernels, or the PyTorch fast
   path without Triton),
3. return a clone of the graph's static output (one more read and write), so that an
   output is never overwritten by a later call.

The two copies are the price of the graph: about 2 x 2 x 428 MB = 1.7 GB of memory
traffic per Faster R-CNN R50-FPN step at batch 2, 800x1216, fp16 (about 0.5 ms on an
H200), against several ms of host time saved.

A graph is keyed by the input's shape, strides, dtype and device, the autocast and
inference-mode state, and the ``data_ptr``, version, dtype and strides of every
parameter and buffer of the module, so a module that is moved, converted (also to
another memory format) or reloaded (``load_state_dict``) is captured again. Policy, per
module:

- a signature is captured the ``CAPTURE_AFTER``-th time it is seen (one-off shapes run
  eagerly; warm-up runs on a side stream, as ``torch.cuda.graph`` requires);
- at most ``MAX_GRAPHS`` graphs are kept (least recently used evicted: each holds its
  static input and output);
- after ``MAX_EVICTIONS`` evictions (input shapes vary too much, e.g. keep-ratio
  resizing of a whole dataset) graphs are switched off for the module;
- a failed capture switches graphs off for the module and is logged once.

Calls that cannot be captured run the eager fast path: CPU tensors, autograd on,
BatchNorm in training mode, inputs that are neither contiguous nor channels_last, or
while a stream is being captured (an outer CUDA graph) or torch.compile traces.
"""
import collections
import logging
import weakref

import torch

MAX_GRAPHS = 4
CAPTURE_AFTER = 2
MAX_EVICTIONS = 8
WARMUP_CALLS = 2

logger = logging.getLogger(__name__)
_logged = set()


def log_once(key, message):
    if key not in _logged:
        _logged.add(key)
        logger.warning(message)


class CapturedCall:
    """A captured graph with its static input and output."""

    def __init__(self, graph, static_in, static_out):
        self.graph = graph
        self.static_in = static_in
        self.static_out = static_out

    def __call__(self, x):
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.clone()


class GraphCache:
    """The captured calls of one module by input signature, with the capture policy."""

    def __init__(self):
        self.calls = collections.OrderedDict()
        self.seen = collections.OrderedDict()
        self.evictions = 0
        self.captures = 0
        self.disabled = False

    def lookup(self, key):
        call = self.calls.get(key)
        if call is not None:
            self.calls.move_to_end(key)
        return call

    def should_capture(self, key):
        """Count a sighting of ``key``; True once it has been seen CAPTURE_AFTER times."""
        count = self.seen.pop(key, 0) + 1
        self.seen[key] = count
        while len(self.seen) > 4 * MAX_GRAPHS:
            self.seen.popitem(last=False)
        return count >= CAPTURE_AFTER

    def add(self, key, call):
        self.seen.pop(key, None)
        self.calls[key] = call
        self.captures += 1
        while len(self.calls) > MAX_GRAPHS:
            self.calls.popitem(last=False)
            self.evictions += 1
        if self.evictions >= MAX_EVICTIONS:
            self.disabled = True
            self.calls.clear()


_caches = weakref.WeakKeyDictionary()


def cache_of(module):
    """The :class:`GraphCache` of ``module`` (created on first use, dropped with it)."""
    cache = _caches.get(module)
    if cache is None:
        cache = _caches[module] = GraphCache()
    return cache


def clear(module=None):
    """Drop the captured graphs of ``module`` (of every module when None)."""
    if module is None:
        _caches.clear()
    else:
        _caches.pop(module, None)


def signature(module, x):
    """What a captured graph depends on (see the module docstring)."""
    state = []
    for m in module.modules():
        for t in m._parameters.values():
            if t is not None:
                state.append((t.data_ptr(), t._version, t.dtype, t.stride()))
        for t in m._buffers.values():
            if t is not None:
                state.append((t.data_ptr(), t._version, t.dtype, t.stride()))
    return (tuple(x.shape), x.stride(), x.dtype, x.device,
            torch.is_autocast_enabled('cuda'), torch.get_autocast_dtype('cuda'),
            torch.is_inference_mode_enabled(), tuple(state))


def capturable(module, x):
    """Whether this call may be captured (CUDA, no autograd, eval BatchNorm, a dense
    contiguous or channels_last input, no outer capture or compilation)."""
    if not x.is_cuda or torch.is_grad_enabled():
        return False
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        return False
    if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
        return False
    return not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
                   for m in module.modules())


def capture(fn, x):
    """Capture ``fn`` on a static copy of ``x``, after warm-up on a side stream."""
    static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
    static_in.copy_(x)
    with torch.cuda.device(x.device):
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(static_in)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # autocast's weight-cast cache must not hold tensors allocated inside a capture
        autocast = torch.autocast('cuda', dtype=torch.get_autocast_dtype('cuda'),
                                  enabled=torch.is_autocast_enabled('cuda'),
                                  cache_enabled=False)
        with autocast, torch.cuda.graph(graph, capture_error_mode='thread_local'):
            static_out = fn(static_in)
    return CapturedCall(graph, static_in, static_out)


def run(module, x, fn):
    """``fn(x)`` (the eager fast path of ``module``), replayed from a CUDA graph where
    the policy in the module docstring allows, else run eagerly."""
    if not capturable(module, x):
        return fn(x)
    cache = cache_of(module)
    if cache.disabled:
        return fn(x)
    try:
        key = signature(module, x)
    except RuntimeError:  # e.g. inference tensors as parameters (no version counter)
        return fn(x)
    call = cache.lookup(key)
    if call is None:
        if not cache.should_capture(key):
            return fn(x)
        try:
            call = capture(fn, x)
        except Exception as e:  # capture is an optimisation: never fail the forward
            cache.disabled = True
            log_once(type(module).__name__,
                     f'CUDA graph capture of {type(module).__name__} failed ({e!r}); '
                     'running the eager fast path for this module')
            return fn(x)
        cache.add(key, call)
        if cache.disabled:
            log_once(('evictions', type(module).__name__),
                     f'{type(module).__name__}: input shapes vary too much for CUDA '
                     f'graphs ({MAX_EVICTIONS} evictions); running the eager fast path')
    return call(x)
