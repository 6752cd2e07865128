"""Argument checks shared by the attention modules: one ValueError per bad argument."""


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f'{name} must be one of {sorted(allowed)}, got {value!r}')


def hidden_channels(in_channels, ratio):
    """C // r, the MLP's hidden size; refuse a hidden size of 0."""
    check_positive_int('in_channels', in_channels)
    check_positive_int('ratio', ratio)
    hidden = in_channels // ratio
    if hidden < 1:
        raise ValueError(
            f'ratio={ratio} gives a hidden size of in_channels // ratio = '
            f'{in_channels} // {ratio} = 0; ratio must be between 1 and in_channels '
            f'({in_channels})')
    return hidden


def check_odd_kernel(name, value):
    check_positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f'{name} must be an odd integer >= 1 (3, 7, ...), got {value!r}')


# the plugins' ``implementation``: the kernel layer where it applies, or the equations
IMPLEMENTATIONS = ('auto', 'reference')
