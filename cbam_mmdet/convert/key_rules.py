"""Key renaming rules as two templates, one per naming, usable both ways (the inverse
names a missing key in the source's terms): ``{s} {b} {n} {i}`` match digits, ``{p}`` a
parameter or buffer name."""
import re

from .errors import CheckpointConversionError

_PLACEHOLDERS = {'s': r'\d+', 'b': r'\d+', 'n': r'\d+', 'i': r'\d+', 'p': r'[A-Za-z_]+'}


def _compile(template):
    pattern = re.escape(template)
    for name, regex in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape('{' + name + '}'), f'(?P<{name}>{regex})')
    return re.compile(pattern + r'\Z')


class KeyRule:
    """One renaming: ``source`` (the checkpoint's naming) <-> ``target`` (mmdet's; None:
    the key is dropped); ``transform(source_key, tensor)`` converts the tensor."""

    def __init__(self, source, target=None, transform=None):
        self.source, self.target, self.transform = source, target, transform
        self._source_re = _compile(source)
        self._target_re = _compile(target) if target is not None else None

    def match_source(self, key):
        return self._source_re.match(key)

    def to_target(self, key):
        """The mmdet key for source ``key``, or None when the rule does not apply."""
        m = self._source_re.match(key)
        return self.target.format(**m.groupdict()) if m and self.target is not None else None

    def to_source(self, key):
        """The source key for mmdet ``key``, or None when the rule does not apply."""
        m = self._target_re.match(key) if self._target_re is not None else None
        return self.source.format(**m.groupdict()) if m else None

    def convert(self, key, tensor):
        return self.transform(key, tensor) if self.transform else tensor


# torchvision ResNet naming (official CBAM code, timm) -> mmdet's ResNet: the same names
# (mmdet stores its BatchNorms as bn1 ...; ``norm1`` etc. are properties).
TORCHVISION_RESNET_RULES = (
    KeyRule('conv1.weight', 'conv1.weight'),
    KeyRule('bn1.{p}', 'bn1.{p}'),
    KeyRule('layer{s}.{b}.conv{n}.weight', 'layer{s}.{b}.conv{n}.weight'),
    KeyRule('layer{s}.{b}.bn{n}.{p}', 'layer{s}.{b}.bn{n}.{p}'),
    KeyRule('layer{s}.{b}.downsample.{i}.{p}', 'layer{s}.{b}.downsample.{i}.{p}'),
)
# The ImageNet classifier: not part of a detection backbone.
CLASSIFIER_RULES = (KeyRule('fc.{p}'),)


def rename(state_dict, rules, drop_rules):
    """``(renamed {mmdet key: converted tensor}, dropped source keys, unknown source keys)``
    for ``rules`` and ``drop_rules`` applied to every key of ``state_dict``."""
    renamed, dropped, unknown, sources = {}, [], [], {}
    for key, value in state_dict.items():
        if any(rule.match_source(key) for rule in drop_rules):
            dropped.append(key)
            continue
        for rule in rules:
            target = rule.to_target(key)
            if target is not None:
                if target in renamed:
                    raise CheckpointConversionError(
                        f'source keys {sources[target]!r} and {key!r} both map to '
                        f'{target!r}')
                renamed[target] = rule.convert(key, value)
                sources[target] = key
                break
        else:
            unknown.append(key)
    return renamed, dropped, unknown


def source_name(key, rules):
    """The source-checkpoint name of mmdet ``key`` (for error messages)."""
    for rule in rules:
        source = rule.to_source(key)
        if source is not None:
            return source
    return None
