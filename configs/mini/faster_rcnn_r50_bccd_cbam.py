# + CBAM (r=16, 7x7) after conv3, before the residual addition, in every block of every
# stage: the paper's placement.
# FusedTailResNet: mmdet's ResNet (same arguments, weights and state_dict keys) whose
# blocks run their residual addition and ReLU inside the plugin: the same values, faster
# (type='ResNet' builds the same model in mmdet's own Bottleneck).
_base_ = './faster_rcnn_r50_bccd.py'
model = dict(backbone=dict(
    type='FusedTailResNet',
    plugins=[dict(cfg=dict(type='CBAM', ratio=16, inplace=True), position='after_conv3')]))
