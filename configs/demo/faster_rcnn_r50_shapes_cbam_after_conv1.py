# Placement study: CBAM inside every block, after conv1 (the first 1x1 conv, its norm and
# relu) and before conv2, on planes channels.
_base_ = './faster_rcnn_r50_shapes.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='CBAM', ratio=16), position='after_conv1')]))
