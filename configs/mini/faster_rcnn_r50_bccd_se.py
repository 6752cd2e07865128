# + SE (r=16) after conv3 in every block of every stage.
# FusedTailResNet: mmdet's ResNet (same arguments, weights and state_dict keys) whose
# blocks run their residual addition and ReLU inside the plugin: the same values, faster
# (type='ResNet' builds the same model in mmdet's own Bottleneck).
_base_ = './faster_rcnn_r50_bccd.py'
model = dict(backbone=dict(
    type='FusedTailResNet',
    plugins=[dict(cfg=dict(type='SE', ratio=16, inplace=True), position='after_conv3')]))
