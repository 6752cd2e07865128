"""timm's SE-ResNet state dicts (``seresnet18/34/50/101/152``) -> mmdet ResNet + SE.

timm's SE is two 1x1 convolutions with bias (``se.fc1/fc2``): each weight becomes a
Linear one. timm rounds the hidden size to a multiple of 8, so seresnet18/34 get ratio 8
in layer1 (per-stage plugin entries).
"""
from .key_rules import TORCHVISION_RESNET_RULES, KeyRule
from .official_cbam import check_not_other_format
from .resnet_conversion import CheckpointConversionError, convert_resnet


def conv1x1_to_linear(key, tensor):
    """A 1x1 convolution weight ``(out, in, 1, 1)`` as a Linear weight ``(out, in)``."""
    if tensor.dim() == 4 and tuple(tensor.shape[2:]) == (1, 1):
        return tensor.reshape(tensor.shape[0], tensor.shape[1]).clone()
    if tensor.dim() == 2:  # already a Linear weight
        return tensor
    raise CheckpointConversionError(
        f'{key}: expected a 1x1 convolution weight (out, in, 1, 1) or a Linear weight '
        f'(out, in), got shape {tuple(tensor.shape)}')


SE_RULES = (
    KeyRule('layer{s}.{b}.se.fc1.weight', 'layer{s}.{b}.se.fc1.weight', conv1x1_to_linear),
    KeyRule('layer{s}.{b}.se.fc1.bias', 'layer{s}.{b}.se.fc1.bias'),
    KeyRule('layer{s}.{b}.se.fc2.weight', 'layer{s}.{b}.se.fc2.weight', conv1x1_to_linear),
    KeyRule('layer{s}.{b}.se.fc2.bias', 'layer{s}.{b}.se.fc2.bias'),
)
TIMM_SERESNET_RULES = TORCHVISION_RESNET_RULES + SE_RULES


def convert_timm_seresnet(state_dict, depth=None):
    """Convert a timm SE-ResNet state dict as :func:`.convert_official_cbam` does CBAM,
    the SE ratio(s) read from the fc1 shapes; also refuses an official CBAM file and a
    hidden size no integer ratio gives."""
    check_not_other_format(state_dict, 'a timm SE-ResNet checkpoint', '.cbam.ChannelGate.',
                           'official ResNet + CBAM', 'tools/convert_official_cbam.py')
    return convert_resnet(
        state_dict, rules=TIMM_SERESNET_RULES, source_format='timm_seresnet',
        plugin_cfg=dict(type='SE'), fc1_suffix='se.fc1.weight', depth=depth,
        describe_source="'layer1.0.se.fc1.weight'")
