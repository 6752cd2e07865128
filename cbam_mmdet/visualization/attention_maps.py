"""Capture the attention maps (CBAM's M_c and M_s, SE's s) of every module during a forward,
computed from each module's input by a forward pre-hook; the model must be in eval mode."""
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch

from ..models import CBAM, SE

STAGE_REDUCTIONS = ('last', 'mean')


@dataclass
class AttentionMaps:
    """One module's last maps: ``channel`` (N, C, 1, 1), ``spatial`` (N, 1, H, W) or None."""
    name: str
    kind: str
    channel: Optional[torch.Tensor]
    spatial: Optional[torch.Tensor]


@torch.no_grad()
def cbam_maps(cbam: CBAM, x: torch.Tensor):
    """``(M_c, M_s)`` of a CBAM module for its input ``x`` (None for a disabled gate)."""
    channel_gate, spatial_gate = cbam.channel_attention, cbam.spatial_attention
    channel = spatial = None
    if cbam.arrangement == 'spatial_first':
        spatial = spatial_gate(x) if spatial_gate is not None else None
        y = x if spatial is None else x * spatial.to(x.dtype)
        channel = channel_gate(y) if channel_gate is not None else None
    else:
        channel = channel_gate(x) if channel_gate is not None else None
        parallel = cbam.arrangement == 'parallel' or channel is None
        y = x if parallel else x * channel.to(x.dtype)
        spatial = spatial_gate(y) if spatial_gate is not None else None
    return channel, spatial


@torch.no_grad()
def se_map(se: SE, x: torch.Tensor):
    """SE's channel attention ``s`` ``(N, C, 1, 1)`` for its input ``x``."""
    return se.gate(x)


def attention_modules(model):
    """``(name, module)`` of every CBAM and SE module of ``model``, in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (CBAM, SE))]


class AttentionRecorder:
    """Context manager recording :class:`AttentionMaps` of every CBAM/SE module by name."""

    def __init__(self, model):
        self.model = model
        self.modules = attention_modules(model)
        self.maps = OrderedDict()
        self._handles = []

    def _hook(self, name):
        def hook(module, args):
            cbam = isinstance(module, CBAM)
            maps = cbam_maps(module, args[0]) if cbam else (se_map(module, args[0]), None)
            self.maps[name] = AttentionMaps(name, 'CBAM' if cbam else 'SE', *(
                None if m is None else m.detach().float().cpu() for m in maps))
        return hook

    def __enter__(self):
        training = [n for n, m in self.modules if m.training]
        if training:
            raise RuntimeError(f'AttentionRecorder: modules in training mode ({training[0]}'
                               f', ...): call model.eval() first')
        self.maps.clear()
        self._handles = [m.register_forward_pre_hook(self._hook(n))
                         for n, m in self.modules]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []


def stage_of(name: str) -> str:
    """The stage of a module name: ``backbone.layer2.3.cbam`` -> ``backbone.layer2``."""
    m = re.match(r'^(.*?\blayer\d+)\.\d+\.', name)
    return m.group(1) if m else name


def group_by_stage(maps):
    """``OrderedDict(stage -> [AttentionMaps, ...])`` in model order."""
    groups = OrderedDict()
    for rec in maps.values():
        groups.setdefault(stage_of(rec.name), []).append(rec)
    return groups


def stage_spatial_maps(maps, reduce='last', index=0):
    """``OrderedDict(stage -> (H, W) map)`` of sample ``index``: last block's or the mean."""
    if reduce not in STAGE_REDUCTIONS:
        raise ValueError(f'reduce must be one of {list(STAGE_REDUCTIONS)}, got {reduce!r}')
    out = OrderedDict()
    for stage, recs in group_by_stage(maps).items():
        spatial = [r.spatial[index, 0] for r in recs if r.spatial is not None]
        if not spatial:
            continue
        if reduce == 'last':
            out[stage] = spatial[-1]
        else:
            shapes = {tuple(s.shape) for s in spatial}
            if len(shapes) != 1:
                raise ValueError(f"reduce='mean': the blocks of {stage} have spatial maps "
                                 f'of different shapes {sorted(shapes)}')
            out[stage] = torch.stack(spatial).mean(0)
    return out


def channel_statistics(maps, index=0):
    """Per module with channel attention: statistics and values of its ``M_c`` (or SE's s)."""
    stats = []
    for rec in (r for r in maps.values() if r.channel is not None):
        v = rec.channel[index].flatten()
        stats.append(dict(name=rec.name, stage=stage_of(rec.name), kind=rec.kind,
                          channels=int(v.numel()), mean=float(v.mean()),
                          std=float(v.std(unbiased=False)), min=float(v.min()),
                          max=float(v.max()), values=v.numpy()))
    return stats
