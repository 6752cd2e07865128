# Placement, both: CBAM at the input of every stage and at the end of every block.
_base_ = './faster_rcnn_r50_neu_cbam.py'
model = dict(backbone=dict(
    type='AttentionResNet', stage_input_attention=dict(type='CBAM', ratio=16)))
