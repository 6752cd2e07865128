"""Every bad input gives one clear error naming the file or field, or a documented skip
with a warning: annotation files, image files, boxes, images without boxes, num_classes,
checkpoints of another architecture; and the tools print it without a traceback."""
import json
import os
import re
import subprocess
import sys

import pytest
from mmengine.config import Config
from test_kill_and_resume import (ROOT, TRAIN, tool_env, write_tiny_coco,
                                  write_tiny_config)

from cbam_mmdet.apis import (AnnotationFileError, DatasetFileError, DatasetWarning,
                             ImageFileError, NumClassesMismatchError, build_test_config,
                             build_train_config, check_num_classes, run_test, run_train,
                             validate_datasets, validate_train_config)
from cbam_mmdet.checkpoint import CheckpointMismatchError
from cbam_mmdet.engine.plugin_check import UnknownPluginError


@pytest.fixture
def tiny(tmp_path):
    coco = write_tiny_coco(tmp_path / 'data')
    config = write_tiny_config(tmp_path / 'tiny.py', tmp_path / 'data', max_iters=1)
    return tmp_path, config, coco


def rewrite(tmp_path, coco):
    with open(tmp_path / 'data' / 'train.json', 'w') as f:
        json.dump(coco, f)


def train_cfg(config, tmp_path, **options):
    return build_train_config(config, work_dir=str(tmp_path / 'work'), cfg_options=options)


def test_a_valid_dataset_passes_without_warnings(tiny, recwarn):
    tmp_path, config, coco = tiny
    report = validate_datasets(Config.fromfile(config), splits=('train',))
    assert report['train_dataloader.dataset']['images'] == len(coco['images'])
    assert not [w for w in recwarn if issubclass(w.category, DatasetWarning)]


def test_missing_annotation_file_names_file_and_field(tiny):
    tmp_path, config, _ = tiny
    os.remove(tmp_path / 'data' / 'train.json')
    with pytest.raises(DatasetFileError,
                       match=r'train\.json \(train_dataloader\.dataset\.ann_file\) does not exist'):
        validate_train_config(train_cfg(config, tmp_path))


def test_corrupt_json_names_file_line_and_column(tiny):
    tmp_path, config, _ = tiny
    (tmp_path / 'data' / 'train.json').write_text('{"images": [\n  {"id": 1,,}\n')
    with pytest.raises(AnnotationFileError,
                       match=r'train\.json \(train_dataloader\.dataset\.ann_file\) is not valid '
                             r'JSON: .* at line 2, column'):
        validate_train_config(train_cfg(config, tmp_path))


def test_json_without_a_coco_field_names_it(tiny):
    tmp_path, config, coco = tiny
    del coco['annotations'][3]['bbox']
    rewrite(tmp_path, coco)
    with pytest.raises(AnnotationFileError, match=r"annotations\[3\] \(id 4\) lacks \['bbox'\]"):
        validate_train_config(train_cfg(config, tmp_path))


def test_images_listed_but_absent_are_counted_and_named(tiny):
    tmp_path, config, coco = tiny
    for name in ('001.png', '004.png'):
        os.remove(tmp_path / 'data' / 'images' / name)
    with pytest.raises(ImageFileError,
                       match=r'2 of 6 images .* 2 missing: .*001\.png, .*004\.png'):
        validate_train_config(train_cfg(config, tmp_path))


def test_corrupt_image_file_is_named(tiny):
    tmp_path, config, _ = tiny
    (tmp_path / 'data' / 'images' / '002.png').write_bytes(b'this is not an image')
    (tmp_path / 'data' / 'images' / '003.png').write_bytes(b'')
    with pytest.raises(ImageFileError, match=r'1 empty: .*003\.png; 1 not an image: .*002\.png'):
        validate_train_config(train_cfg(config, tmp_path))


def test_image_damaged_past_its_header_is_named_when_read(tiny):
    """Passes the pre-flight header check, fails to decode in the data pipeline."""
    tmp_path, config, _ = tiny
    path = tmp_path / 'data' / 'images' / '000.png'
    path.write_bytes(path.read_bytes()[:16] + b'\x00' * 64)
    cfg = train_cfg(config, tmp_path)
    cfg.train_dataloader.sampler.shuffle = False
    with pytest.raises(ImageFileError, match=r'image file .*000\.png cannot be decoded'):
        run_train(cfg)


def test_boxes_outside_the_image_are_skipped_or_clipped_with_warnings(tiny):
    tmp_path, config, coco = tiny
    extra = [dict(bbox=[70, 70, 10, 10]), dict(bbox=[-5, 50, 20, 20]), dict(bbox=[5, 5, 0.5, 9])]
    for i, ann in enumerate(extra):
        coco['annotations'].append(dict(ann, id=100 + i, image_id=0, category_id=1,
                                        area=ann['bbox'][2] * ann['bbox'][3], iscrowd=0))
    rewrite(tmp_path, coco)
    with pytest.warns(DatasetWarning) as record:
        report = validate_datasets(Config.fromfile(config), splits=('train',))
    messages = '\n'.join(str(w.message) for w in record)
    assert '1 boxes lie entirely outside their image and are skipped' in messages
    assert 'annotation 100' in messages
    assert '1 boxes extend beyond their image; they are clipped' in messages
    assert '1 boxes are smaller than 1 pixel' in messages
    counts = report['train_dataloader.dataset']
    assert (counts['outside'], counts['clipped'], counts['degenerate']) == (1, 1, 1)


def test_images_without_boxes_are_skipped_with_a_warning(tiny):
    tmp_path, config, coco = tiny
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] not in (1, 2)]
    rewrite(tmp_path, coco)
    with pytest.warns(DatasetWarning, match=r'2 of 6 images have no usable box and are '
                                            r'skipped in training .*filter_empty_gt=True'):
        validate_datasets(Config.fromfile(config), splits=('train',))


def test_no_image_with_boxes_is_an_error(tiny):
    tmp_path, config, coco = tiny
    coco['annotations'] = []
    rewrite(tmp_path, coco)
    with pytest.raises(AnnotationFileError, match='none of its 6 images has a usable box'):
        validate_train_config(train_cfg(config, tmp_path))


def test_num_classes_mismatch_names_the_head_field(tiny):
    tmp_path, config, _ = tiny
    cfg = train_cfg(config, tmp_path, **{'model.roi_head.bbox_head.num_classes': 5})
    with pytest.raises(NumClassesMismatchError,
                       match=r'model\.roi_head\.bbox_head\.num_classes is 5, but the train '
                             r'dataset .* has 2 classes \(square, disc\)'):
        check_num_classes(cfg)


def save_model_checkpoint(config, path, **model_options):
    import torch
    from mmdet.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(model_options)
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict(), meta=dict()), path)
    return str(path)


def test_checkpoint_of_another_architecture_is_refused_by_test(tiny):
    tmp_path, config, _ = tiny
    ckpt = save_model_checkpoint(config, tmp_path / 'se.pth', **{
        'model.backbone.plugins': [dict(cfg=dict(type='SE'), position='after_conv3')],
        'model.roi_head.bbox_head.num_classes': 3})
    cfg = build_test_config(config, ckpt, work_dir=str(tmp_path / 'test'))
    with pytest.raises(CheckpointMismatchError) as info:
        run_test(cfg)
    message = str(info.value)
    assert 'keys of the model missing from the checkpoint: backbone.layer1.0.cbam.' in message
    assert 'unexpected keys in the checkpoint: backbone.layer1.0.se.' in message
    assert 'roi_head.bbox_head.fc_cls.weight (checkpoint [4, 32], model [3, 32])' in message


def test_checkpoint_of_another_architecture_is_refused_by_load_from(tiny):
    tmp_path, config, _ = tiny
    ckpt = save_model_checkpoint(config, tmp_path / 'three.pth',
                                 **{'model.roi_head.bbox_head.num_classes': 3})
    with pytest.raises(CheckpointMismatchError, match=r'keys with another shape: '
                                                      r'roi_head\.bbox_head\.fc_cls'):
        run_train(train_cfg(config, tmp_path, load_from=ckpt))
    # fine-tuning from it on purpose
    cfg = build_train_config(config, work_dir=str(tmp_path / 'partial'), load_from_partial=True,
                             cfg_options=dict(load_from=ckpt))
    assert run_train(cfg).iter == 1


def test_tool_prints_one_error_without_traceback(tiny):
    tmp_path, config, _ = tiny
    proc = subprocess.run([sys.executable, TRAIN, config, '--work-dir', str(tmp_path / 'w'),
                           '--cfg-options', 'model.roi_head.bbox_head.num_classes=5'],
                          env=tool_env(), capture_output=True, text=True, timeout=180,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert 'error: model.roi_head.bbox_head.num_classes is 5' in proc.stderr
    assert 'Traceback' not in proc.stderr


def typo_config(tmp_path, config):
    path = tmp_path / 'typo.py'
    path.write_text(f"_base_ = {config!r}\nmodel = dict(backbone=dict(plugins=["
                    f"dict(cfg=dict(type='CBMA'), position='after_conv3')]))\n")
    return str(path)


def assert_names_the_typo(message):
    assert "unknown plugin type 'CBMA'" in message
    assert re.search(r'registered by cbam_mmdet: .*\bCBAM\b.*\bSE\b', message), message
    assert "Did you mean 'CBAM'?" in message


def test_plugin_type_typo_is_named_with_the_attention_plugins(tiny):
    tmp_path, config, _ = tiny
    config = typo_config(tmp_path, config)
    with pytest.raises(UnknownPluginError) as info:  # the tools' pre-flight check
        validate_train_config(train_cfg(config, tmp_path))
    assert 'model.backbone.plugins[0].cfg.type' in str(info.value)
    assert_names_the_typo(str(info.value))
    from mmdet.registry import MODELS  # a script of its own that builds the model
    with pytest.raises(KeyError) as info:
        MODELS.build(Config.fromfile(config).model)
    assert_names_the_typo(str(info.value))
    proc = subprocess.run([sys.executable, TRAIN, config, '--work-dir', str(tmp_path / 'w')],
                          env=tool_env(), capture_output=True, text=True, timeout=180,
                          cwd=ROOT)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert_names_the_typo(proc.stderr)
