_base_ = './faster_rcnn_r101_coco.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='CBAM', ratio=16, inplace=True), position='after_conv3')]))
