"""Every invalid plugin argument raises one ValueError naming the argument and the choices."""
import pytest

from cbam_mmdet import CBAM, SE

CASES = [
    (CBAM, dict(in_channels=8, ratio=16), r'ratio=16 gives a hidden size of .* = 0'),
    (SE, dict(in_channels=8, ratio=16), r'ratio=16 gives a hidden size'),
    (CBAM, dict(in_channels=64, ratio=0), r'ratio must be an integer >= 1'),
    (CBAM, dict(in_channels=64, spatial_kernel=4), r'spatial_kernel must be an odd integer'),
    (CBAM, dict(in_channels=64, spatial_kernel=0), r'spatial_kernel must be an integer >= 1'),
    (CBAM, dict(in_channels=64, channel_pool='mean'),
     r"channel_pool must be one of \['avg', 'avg\+max', 'max'\], got 'mean'"),
    (CBAM, dict(in_channels=64, arrangement='serial'),
     r"arrangement must be one of \['channel_first', 'parallel', 'spatial_first'\]"),
    (CBAM, dict(in_channels=64, spatial_descriptor='avg'),
     r"spatial_descriptor must be one of \['conv1x1', 'max\+mean'\]"),
    (CBAM, dict(in_channels=64, channel_attention=False, spatial_attention=False),
     r'channel_attention and spatial_attention are both False'),
    (CBAM, dict(in_channels=0), r'in_channels must be an integer >= 1, got 0'),
    (SE, dict(in_channels=0), r'in_channels must be an integer >= 1, got 0'),
    (CBAM, dict(in_channels=-3), r'in_channels must be an integer >= 1'),
    (CBAM, dict(in_channels=64, channel_attention='yes'), r'channel_attention must be one of'),
]


@pytest.mark.parametrize('cls,kwargs,message', CASES,
                         ids=[f'{c.__name__}-{"-".join(map(str, k.items()))}' for c, k, _ in CASES])
def test_invalid_argument_raises_value_error(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_invalid_argument_from_a_config_names_the_field():
    from mmdet.registry import MODELS
    with pytest.raises(ValueError, match='spatial_kernel'):
        MODELS.build(dict(type='CBAM', in_channels=64, spatial_kernel=2))
