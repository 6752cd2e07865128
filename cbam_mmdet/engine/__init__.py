from . import checkpoint_match, exact_resume_loops, rng_state  # noqa: F401 (hooks, loops)
from . import plugin_check  # noqa: F401  (unknown plugin types named; see the module)
from .frozen_attention_check import (FrozenAttentionCheckHook,
                                     check_no_frozen_random_attention,
                                     frozen_attention_modules)

__all__ = ['FrozenAttentionCheckHook', 'check_no_frozen_random_attention',
           'frozen_attention_modules']
