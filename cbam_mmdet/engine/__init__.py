from . import checkpoint_match, exact_resume, plugin_check, replica_check  # noqa: F401
from .frozen_attention_check import (FrozenAttentionCheckHook,
                                     check_no_frozen_random_attention,
                                     frozen_attention_modules)

__all__ = ['FrozenAttentionCheckHook', 'check_no_frozen_random_attention',
           'frozen_attention_modules']
