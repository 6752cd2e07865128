# + SE (r=16) after conv3 in every block of every stage, as the paper's SE baseline.
_base_ = './faster_rcnn_r50_shapes.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='SE', ratio=16), position='after_conv3')]))
