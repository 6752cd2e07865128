# Placement study: CBAM inside every block, after conv2 (the 3x3 conv) and before conv3,
# on planes channels, instead of the paper's block end (after conv3).
_base_ = './faster_rcnn_r50_shapes.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='CBAM', ratio=16), position='after_conv2')]))
