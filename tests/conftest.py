import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True, scope='session')
def mmdet_scope():
    """Register mmdet's modules and make 'mmdet' the default scope, as mmdet's tools do."""
    from mmdet.utils import register_all_modules

    import cbam_mmdet  # noqa: F401  (registers CBAM and SE)
    register_all_modules(init_default_scope=True)
    yield
