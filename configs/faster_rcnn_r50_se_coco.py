# + SE after conv3 (before the residual addition) in every block of every stage.
# inplace=True: in inference the plugin writes its output over norm3's output, which
# the block does not read again (no extra feature-sized tensor; same values).
_base_ = './faster_rcnn_r50_coco.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='SE', ratio=16, inplace=True), position='after_conv3')]))
