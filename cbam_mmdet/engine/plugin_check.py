"""One clear error for an unknown plugin type (a typo such as ``type='CBMA'``).

mmcv reports one as ``KeyError: 'Cannot find None in registry under scope name mmdet'``.
:func:`check_model_plugins` checks a model config before anything is built (the tools run
it). For scripts that build models themselves, importing :mod:`cbam_mmdet` replaces the
name ``build_plugin_layer`` in ``mmdet.models.backbones.resnet`` (where mmdet's Bottleneck
and PluginResNet's BasicBlock look it up) by :func:`build_plugin_layer`, mmcv's function
behind the same check; nothing else of mmdet or mmcv changes.
"""
import difflib
import inspect

import mmdet.models.backbones.resnet as _mmdet_resnet
from mmengine.registry import MODELS, DefaultScope


class UnknownPluginError(KeyError):
    """A plugin config names a type no registry in scope holds."""

    __str__ = Exception.__str__  # the message as written (KeyError would quote it)


def _lookup(type_name, scope=None):
    """``(class or None, scope searched)``, as mmcv's build_plugin_layer looks it up."""
    with DefaultScope.overwrite_default_scope(scope):
        with MODELS.switch_scope_and_registry(None) as registry:
            return registry.get(type_name), registry.scope


def attention_plugins():
    """The types cbam_mmdet registers that take ``in_channels`` first, as mmdet's plugin
    builder passes it (CBAM, SE, ...)."""
    from mmdet.registry import MODELS as MMDET_MODELS
    return sorted(name for name, cls in MMDET_MODELS.module_dict.items()
                  if isinstance(cls, type) and cls.__module__.startswith('cbam_mmdet.')
                  and list(inspect.signature(cls).parameters)[:1] == ['in_channels'])


def check_plugin_type(type_name, where='a plugins[].cfg.type', scope=None):
    """Raise :class:`UnknownPluginError` naming ``type_name`` and the attention plugins
    when no registry in scope (default: the current one) holds it."""
    if not isinstance(type_name, str):
        return
    found, searched = _lookup(type_name, scope)
    if found is not None:
        return
    known = attention_plugins()
    close = difflib.get_close_matches(type_name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ''
    raise UnknownPluginError(
        f'unknown plugin type {type_name!r} ({where}): no module of this name is '
        f'registered in scope {searched!r}. Attention plugins registered by cbam_mmdet: '
        f'{", ".join(known)} (any other module of the mmdet MODELS registry works too).'
        f'{hint}')


def model_plugin_types(model_cfg, where='model'):
    """``[(config field, type)]`` of every ResNet plugin (``plugins[i].cfg.type``),
    AttentionResNet module and NeckAttention ``attention.type`` in a model config, at any
    depth."""
    found = []
    if isinstance(model_cfg, dict):
        for i, plugin in enumerate(model_cfg.get('plugins') or []):
            if isinstance(plugin, dict) and isinstance(plugin.get('cfg'), dict):
                found.append((f'{where}.plugins[{i}].cfg.type', plugin['cfg'].get('type')))
        attention = model_cfg.get('attention')
        if model_cfg.get('type') == 'NeckAttention' and isinstance(attention, dict):
            found.append((f'{where}.attention.type', attention.get('type')))
        for key in ('stem_attention', 'stage_input_attention'):  # AttentionResNet
            if isinstance(model_cfg.get(key), dict):
                found.append((f'{where}.{key}.type', model_cfg[key].get('type')))
        for key, value in model_cfg.items():
            if key not in ('plugins', 'attention'):
                found += model_plugin_types(value, f'{where}.{key}')
    elif isinstance(model_cfg, (list, tuple)):
        for i, value in enumerate(model_cfg):
            found += model_plugin_types(value, f'{where}[{i}]')
    return found


def check_model_plugins(cfg):
    """Check every plugin type of ``cfg.model`` (see :func:`model_plugin_types`) in the
    config's default scope."""
    scope = cfg.get('default_scope', None) or 'mmdet'
    for where, type_name in model_plugin_types(cfg.get('model'), 'model'):
        check_plugin_type(type_name, where, scope)


_mmcv_build_plugin_layer = _mmdet_resnet.build_plugin_layer


def build_plugin_layer(cfg, postfix='', **kwargs):
    """mmcv's ``build_plugin_layer``, with :func:`check_plugin_type` first."""
    if isinstance(cfg, dict):
        check_plugin_type(cfg.get('type'))
    return _mmcv_build_plugin_layer(cfg, postfix, **kwargs)


_mmdet_resnet.build_plugin_layer = build_plugin_layer
