from .distributed import prepare_distributed
from .errors import (KNOWN_ERRORS, AnnotationFileError, DatasetFileError, DatasetWarning,
                     ImageFileError, InputError, MissingCheckpointError,
                     NumClassesMismatchError, exit_on_known_errors, parse_tool_args)
from .input_validation import check_dataset_paths, check_num_classes, validate_datasets
from .testing import build_test_config, run_test
from .training import (build_runner, build_train_config, run_train, use_exact_resume,
                       validate_train_config)

__all__ = ['check_dataset_paths', 'build_train_config', 'build_runner', 'run_train',
           'build_test_config', 'run_test', 'validate_train_config', 'use_exact_resume',
           'validate_datasets', 'check_num_classes', 'prepare_distributed',
           'exit_on_known_errors', 'parse_tool_args', 'KNOWN_ERRORS', 'InputError',
           'DatasetFileError', 'MissingCheckpointError', 'AnnotationFileError', 'ImageFileError',
           'NumClassesMismatchError', 'DatasetWarning']
