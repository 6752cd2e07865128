from .frozen_attention_check import (FrozenAttentionCheckHook,
                                     check_no_frozen_random_attention,
                                     frozen_attention_modules)

__all__ = ['FrozenAttentionCheckHook', 'check_no_frozen_random_attention',
           'frozen_attention_modules']
