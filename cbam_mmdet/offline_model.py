"""Build a config's model with no network and no files: every ``Pretrained`` init_cfg
(e.g. ``torchvision://resnet50``) removed, so the weights stay at their initialisation."""
import contextlib
import copy
import logging

from mmengine.config import Config
from mmengine.logging import MMLogger


def without_pretrained(cfg):
    """A deep copy of ``cfg`` (dict, list, Config) in which every ``init_cfg`` that loads a
    checkpoint (``type='Pretrained'``, alone or in a list) is set to None, at any depth."""
    def strip(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'init_cfg' and loads_checkpoint(value):
                    node[key] = None
                else:
                    strip(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                strip(value)
        return node

    return strip(copy.deepcopy(cfg))


def loads_checkpoint(init_cfg):
    """Whether an init_cfg (dict or list) loads a checkpoint (type Pretrained)."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs)


def load_config(config):
    """A Config from a path (or the Config itself), with its custom_imports imported and
    mmdet's modules registered under the default scope 'mmdet', as mmdet's tools do."""
    from mmdet.utils import register_all_modules
    from mmengine.utils import import_modules_from_strings

    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    imports = cfg.get('custom_imports')
    if imports:
        import_modules_from_strings(**imports)
    register_all_modules(init_default_scope=True)
    return cfg


def build_model_offline(config):
    """The detector of ``config`` (path or Config), initialised without checkpoints."""
    from mmdet.registry import MODELS

    cfg = load_config(config)
    model = MODELS.build(without_pretrained(cfg.model))
    with quiet_logs():
        model.init_weights()
    return model


@contextlib.contextmanager
def quiet_logs(level=logging.WARNING):
    """mmengine's current logger at ``level``: ``init_weights`` logs every parameter's
    initialisation at INFO, thousands of lines on stdout outside a Runner."""
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
