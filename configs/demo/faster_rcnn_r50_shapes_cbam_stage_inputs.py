# Placement study, before the blocks: one CBAM at the input of every stage, before its first
# block (layer1: the stem's output; layer2-4: the previous stage's output on the path into
# the stage, not the map the FPN receives); the blocks unchanged.
_base_ = './faster_rcnn_r50_shapes.py'
model = dict(backbone=dict(
    type='AttentionResNet', stage_input_attention=dict(type='CBAM', ratio=16)))
