"""tools/reproduce.py --preset custom on generated VOC and COCO folders, its data errors,
and seed pairing (same seed and variant: same first loss; another seed: another)."""
import csv
import glob
import json
import os
import os.path as osp

import numpy as np
import pytest

from cbam_mmdet import reproduce

# 2 CPU iterations of a narrow R-50-FPN on 64x64 images
FAST = ['--max-iters', '2', '--scale', '64', '--device', 'cpu', '--variants', 'baseline',
        '--cfg-options', 'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False', 'model.backbone.base_channels=16',
        'model.neck.in_channels=[64,128,256,512]', 'model.neck.out_channels=64',
        'model.rpn_head.in_channels=64', 'model.rpn_head.feat_channels=64',
        'model.roi_head.bbox_roi_extractor.out_channels=64',
        'model.roi_head.bbox_head.in_channels=64',
        'model.roi_head.bbox_head.fc_out_channels=128']
BOXES = {'a0': [('cat', 8, 8, 40, 40)], 'a1': [('dog', 10, 20, 50, 60)],
         'a2': [('cat', 4, 4, 30, 30), ('dog', 30, 30, 60, 60)], 'a3': [('dog', 5, 5, 40, 50)],
         'b0': [('cat', 10, 10, 50, 50)], 'b1': [('dog', 20, 20, 60, 60)]}


def _image(path, i):
    import cv2
    img = np.full((64, 64, 3), 40 * i % 255, np.uint8)
    img[16:48, 16:48] = 200
    cv2.imwrite(path, img)


def make_voc(root, boxes=BOXES):
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    for i, (name, objs) in enumerate(boxes.items()):
        _image(osp.join(root, 'JPEGImages', f'{name}.jpg'), i)
        objects = ''.join(
            f'<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>'
            f'<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>'
            for c, x1, y1, x2, y2 in objs)
        with open(osp.join(root, 'Annotations', f'{name}.xml'), 'w') as f:
            f.write(f'<annotation><filename>{name}.jpg</filename><size><width>64</width>'
                    f'<height>64</height><depth>3</depth></size>{objects}</annotation>')
    for split, prefix in (('trainval', 'a'), ('test', 'b')):
        with open(osp.join(root, 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
            f.write(''.join(f'{n}\n' for n in boxes if n.startswith(prefix)))
    return str(root)


def make_coco(root):
    os.makedirs(osp.join(root, 'images'))
    os.makedirs(osp.join(root, 'annotations'))
    cats = [dict(id=1, name='cat'), dict(id=2, name='dog')]
    for split, prefix in (('train', 'a'), ('val', 'b')):
        images, anns = [], []
        for i, (name, objs) in enumerate(BOXES.items()):
            if not name.startswith(prefix):
                continue
            _image(osp.join(root, 'images', f'{name}.jpg'), i)
            images.append(dict(id=i, file_name=f'{name}.jpg', width=64, height=64))
            anns += [dict(image_id=i, category_id=1 + (c == 'dog'),
                          bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                          iscrowd=0) for c, x1, y1, x2, y2 in objs]
        for k, ann in enumerate(anns):
            ann['id'] = k + 1
        with open(osp.join(root, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return str(root)


def _run(args, work_dir):
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    results = reproduce.main(['--preset', 'custom', '--work-dir', str(work_dir)] + args,
                             log=lambda *_: None)
    with open(osp.join(work_dir, 'comparison.csv')) as f:
        rows = list(csv.DictReader(f))
    with open(osp.join(work_dir, 'comparison.md')) as f:
        return results, rows, f.read()


@pytest.mark.parametrize('fmt', ['voc', 'coco'])
def test_custom_preset_trains_and_reports(tmp_path, fmt):
    root = (make_voc if fmt == 'voc' else make_coco)(tmp_path / 'data')
    results, rows, md = _run(['--data-root', root, '--format', fmt] + FAST, tmp_path / 'w')
    assert [r['status'] for r in results] == ['ok'], results
    assert rows[0]['variant'] == 'baseline' and rows[0]['n_seeds'] == '1'
    assert 0.0 <= float(rows[0]['mAP_mean']) <= 100.0
    assert '2 classes: cat, dog' in md and 'from scratch' in md
    assert 'cannot tell a difference from noise' in md
    assert osp.getsize(osp.join(tmp_path, 'w', 'comparison.png')) > 0


@pytest.mark.parametrize('case, message', [
    ('no_root', 'needs --data-root'),
    ('no_annotations', 'Annotations does not exist'),
    ('empty_split', 'split test: .* lists no images'),
    ('absent_class', r"classes \['bird'\] do not occur in the XML files"),
    ('no_coco_file', 'train annotation file .* does not exist'),
    ('missing_image', 'images listed by the annotations are not usable'),
])
def test_bad_data_is_one_error_before_training(tmp_path, case, message):
    root = make_voc(tmp_path / 'voc')
    args = ['--data-root', root]
    if case == 'no_root':
        args = ['--data-root', str(tmp_path / 'nothing')]
    elif case == 'no_annotations':
        os.rename(osp.join(root, 'Annotations'), osp.join(root, 'xml'))
    elif case == 'empty_split':
        open(osp.join(root, 'ImageSets', 'Main', 'test.txt'), 'w').close()
    elif case == 'absent_class':
        args += ['--classes', 'cat,bird']
    elif case == 'no_coco_file':
        args += ['--format', 'coco', '--img-dir', 'JPEGImages']
    elif case == 'missing_image':
        os.remove(osp.join(root, 'JPEGImages', 'a1.jpg'))
    with pytest.raises(SystemExit, match=message):
        reproduce.main(['--preset', 'custom', '--work-dir', str(tmp_path / 'w')] + args,
                       log=lambda *_: None)
    assert not osp.exists(tmp_path / 'w')  # nothing trained


def _first_losses(work_dir):
    """{seed: the loss logged at iteration 1} of the baseline's runs."""
    losses = {}
    for path in glob.glob(osp.join(work_dir, 'baseline', 'seed*', '*', 'vis_data',
                                   'scalars.json')):
        seed = int(path.split(os.sep)[-4][len('seed'):])
        with open(path) as f:
            losses[seed] = [json.loads(line) for line in f][0]['loss']
    return losses


def test_runs_of_a_seed_share_the_first_loss(tmp_path):
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    tiny = ['--preset', 'demo', '--variants', 'baseline', '--max-iters', '1',
            '--cfg-options', 'train_dataloader.dataset.num_images=16',
            'train_dataloader.batch_size=2', 'test_dataloader.dataset.num_images=4']
    reproduce.main(tiny + ['--seeds', '2', '--work-dir', str(tmp_path / 'a')],
                   log=lambda *_: None)
    reproduce.main(tiny + ['--work-dir', str(tmp_path / 'b')], log=lambda *_: None)
    a, b = _first_losses(tmp_path / 'a'), _first_losses(tmp_path / 'b')
    assert sorted(a) == [0, 1] and sorted(b) == [0]
    assert a[0] == b[0] and a[0] != a[1]


def test_custom_options_schedule_scale_and_backbone_checkpoint(tmp_path):
    from cbam_mmdet.reproduce.custom import custom_preset
    root, checkpoint = make_voc(tmp_path / 'voc'), tmp_path / 'backbone.pth'
    checkpoint.write_bytes(b'')
    preset = custom_preset(reproduce.parse_args([
        '--preset', 'custom', '--data-root', root, '--epochs', '8', '--scale', '300',
        '--variants', 'cbam,baseline', '--backbone-checkpoint', str(checkpoint)]))
    assert [v.name for v in preset.variants] == ['CBAM', 'baseline']
    options = preset.options
    assert options['model.backbone.init_cfg'] == dict(type='Pretrained',
                                                      checkpoint=str(checkpoint))
    assert options['train_cfg.max_epochs'] == 8
    assert options['model.roi_head.bbox_head.num_classes'] == 2
    assert options['train_dataloader.dataset.pipeline.2.scale'] == (500, 300)
    assert 'backbone from' in preset.description and preset.input_shape == (3, 300, 500)
