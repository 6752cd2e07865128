# + CBAM after conv3 (before the residual addition) in every block of every stage,
# as the paper and the official code.
# inplace=True: in inference the plugin writes its output over norm3's output, which
# the block does not read again (no extra feature-sized tensor; same values).
# FusedTailResNet: mmdet's ResNet (same arguments, weights and state_dict keys) whose
# blocks run their residual addition and ReLU inside the plugin: the same values, faster
# (type='ResNet' builds the same model in mmdet's own Bottleneck).
_base_ = './faster_rcnn_r50_coco.py'
model = dict(backbone=dict(
    type='FusedTailResNet',
    plugins=[dict(cfg=dict(type='CBAM', ratio=16, inplace=True), position='after_conv3')]))
