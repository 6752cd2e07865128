"""A checkpoint whose unpickling would run code is refused everywhere the project loads
one (tools/test.py, --resume, load_from, a backbone init_cfg Pretrained file, the
converters), and the code does not run; --unsafe-load-untrusted-checkpoints (or the
environment variable) is what makes it load."""
import os
import subprocess
import sys

import pytest
import torch
from test_kill_and_resume import (ROOT, tool_env, write_tiny_coco,
                                  write_tiny_config)

from cbam_mmdet.checkpoint import (UNSAFE_ENV, UnsafeCheckpointError,
                                   allow_unsafe_checkpoints, load_checkpoint_file)


class Payload:
    """Unpickling calls exec(...), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()',))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    root = tmp_path_factory.mktemp('hostile')
    write_tiny_coco(root / 'data')
    config = write_tiny_config(root / 'tiny.py', root / 'data', max_iters=1)
    model = MODELS.build(Config.fromfile(config).model)
    state = model.state_dict()
    marker = root / 'code_ran'
    hostile = root / 'hostile.pth'
    torch.save(dict(state_dict=state, meta=dict(epoch=0, iter=0), payload=Payload(marker)),
               hostile)
    backbone = root / 'hostile_backbone.pth'
    torch.save(dict(state_dict={k[len('backbone.'):]: v for k, v in state.items()
                                if k.startswith('backbone.')}, payload=Payload(marker)),
               backbone)
    yield root, config, str(hostile), str(backbone), marker
    allow_unsafe_checkpoints(False)


def load_tool(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFUSED = (r"refused to load checkpoint .*hostile.*needs '(builtins\.)?exec'.*"
           r"Nothing in it was executed")


def test_tools_test_refuses_it(setup, tmp_path):
    root, config, hostile, _, marker = setup
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        load_tool('test').main([config, hostile, '--work-dir', str(tmp_path)])
    assert not marker.exists()


def test_train_resume_refuses_it(setup, tmp_path):
    root, config, hostile, _, marker = setup
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        load_tool('train').main([config, '--work-dir', str(tmp_path), '--resume', hostile])
    assert not marker.exists()


def test_train_load_from_refuses_it(setup, tmp_path):
    root, config, hostile, _, marker = setup
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        load_tool('train').main([config, '--work-dir', str(tmp_path), '--cfg-options',
                                 f'load_from={hostile}'])
    assert not marker.exists()


def test_backbone_init_cfg_pretrained_refuses_it(setup, tmp_path):
    from cbam_mmdet.apis import build_train_config, run_train
    from mmengine.config import Config
    root, config, _, backbone, marker = setup
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=backbone)
    cfg = build_train_config(cfg, work_dir=str(tmp_path))
    with pytest.raises(UnsafeCheckpointError, match=r'hostile_backbone\.pth'):
        run_train(cfg)
    assert not marker.exists()


def test_converters_refuse_it(setup):
    from cbam_mmdet.convert.checkpoint_io import read_state_dict
    root, config, hostile, _, marker = setup
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        read_state_dict(hostile)
    assert not marker.exists()


def test_command_line_prints_one_error_and_exits_2(setup, tmp_path):
    root, config, hostile, _, marker = setup
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'test.py'), config,
                           hostile, '--work-dir', str(tmp_path)], env=tool_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'error: refused to load checkpoint' in proc.stderr
    assert '--unsafe-load-untrusted-checkpoints' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not marker.exists()


def test_unsafe_option_is_what_makes_it_load(setup, tmp_path):
    root, config, hostile, _, marker = setup
    metrics = load_tool('test').main([config, hostile, '--work-dir', str(tmp_path),
                                      '--unsafe-load-untrusted-checkpoints'])
    assert marker.exists(), 'the option did not load the file with the full unpickler'
    assert 'coco/bbox_mAP' in metrics
    marker.unlink()
    allow_unsafe_checkpoints(False)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint_file(hostile)
    assert not marker.exists()


def test_environment_variable_allows_it(setup, monkeypatch):
    root, config, hostile, _, marker = setup
    monkeypatch.setenv(UNSAFE_ENV, '1')
    assert 'payload' in load_checkpoint_file(hostile)
    assert marker.exists()
    marker.unlink()


def test_mmengine_checkpoints_load_weights_only(tmp_path):
    """The allowlist covers what mmengine writes: message hub (HistoryBuffer, numpy)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub.get_instance('safe_loading_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('scores', np.arange(3, dtype=np.float32))
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict(),
                    meta=dict(seed=0, np_scalar=np.float64(2.0))), path)
    ckpt = load_checkpoint_file(path)
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert ckpt['meta']['np_scalar'] == 2.0


class AttributePayload:
    """getattr on an allowlisted class, the route mmengine's own checkpoints use for
    HistoryBuffer's statistics; any other attribute must be refused."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save(dict(payload=AttributePayload()), path)
    with pytest.raises(UnsafeCheckpointError,
                       match=r"getattr\(HistoryBuffer, '__init__'\) is not allowed"):
        load_checkpoint_file(path)
