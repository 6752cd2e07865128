"""What CBAM and SE share for calls replayed from C++ (:mod:`cbam_mmdet.ops.triton_programs`).

The Triton path binds a call whose launches it has recorded to its module
(``module._bindings``); the module's ``forward`` tries the bindings first, and only where
none applies (another input signature, autograd mode, stream, parameter, setting or
environment) runs its Python path, which chooses an implementation again.
"""
from ..ops import check_implementation
from ._validate import check_choice


class BoundCalls:
    """Mixin of :class:`~cbam_mmdet.CBAM` and :class:`~cbam_mmdet.SE`: the bindings, dropped
    when ``implementation`` or ``inplace`` is set and left out of copies, pickles and
    ``nn.DataParallel``'s replicas."""

    _bindings = None

    @property
    def implementation(self) -> str:
        return self.__dict__['_implementation']

    @implementation.setter
    def implementation(self, value: str):
        check_implementation(value)
        self.__dict__['_implementation'] = value
        self.__dict__['_bindings'] = None

    @property
    def inplace(self) -> bool:
        return self.__dict__['_inplace']

    @inplace.setter
    def inplace(self, value: bool):
        check_choice('inplace', value, (True, False))
        self.__dict__['_inplace'] = value
        self.__dict__['_bindings'] = None

    def _replicate_for_data_parallel(self):
        # nn.DataParallel's replicas share a copy of this module's __dict__ but hold
        # their own parameters: each binds its own calls
        replica = super()._replicate_for_data_parallel()
        replica.__dict__['_bindings'] = None
        return replica

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop('_bindings', None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        for name in ('implementation', 'inplace'):  # pickled before these were properties
            if name in state:
                state['_' + name] = state.pop(name)
        super().__setstate__(state)
