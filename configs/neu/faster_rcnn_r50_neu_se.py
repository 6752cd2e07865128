# + SE (r=16) after conv3 in every block of every stage.
_base_ = './faster_rcnn_r50_neu.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='SE', ratio=16), position='after_conv3')]))
