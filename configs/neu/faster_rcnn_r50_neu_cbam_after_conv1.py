# Placement: CBAM inside every block, after conv1 (its norm and relu), on planes channels.
_base_ = './faster_rcnn_r50_neu.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='CBAM', ratio=16), position='after_conv1')]))
