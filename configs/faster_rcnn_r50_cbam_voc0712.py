# + CBAM after conv3 (before the residual addition) in every block of every stage, as in
# the paper and the official code: mmdet's ResNet with a plugin.
_base_ = './faster_rcnn_r50_voc0712.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='CBAM', ratio=16), position='after_conv3')]))
