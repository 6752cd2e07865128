# Placement study, both: CBAM at the input of every stage and at the end of every block
# (after conv3, the paper).
_base_ = './faster_rcnn_r50_shapes_cbam.py'
model = dict(backbone=dict(
    type='AttentionResNet', stage_input_attention=dict(type='CBAM', ratio=16)))
