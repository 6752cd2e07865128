from .dataset_check import check_dataset_paths
from .testing import build_test_config, run_test
from .training import build_runner, build_train_config, run_train

__all__ = ['check_dataset_paths', 'build_train_config', 'build_runner', 'run_train',
           'build_test_config', 'run_test']
