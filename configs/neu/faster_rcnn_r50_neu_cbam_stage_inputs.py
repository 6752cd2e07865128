# Placement, before the blocks: one CBAM at the input of every stage (64, 256, 512, 1024
# channels), on the path into the stage.
_base_ = './faster_rcnn_r50_neu.py'
model = dict(backbone=dict(
    type='AttentionResNet', stage_input_attention=dict(type='CBAM', ratio=16)))
