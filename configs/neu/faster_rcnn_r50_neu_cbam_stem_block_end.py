# Placement, both: CBAM on the stem's output and at the end of every block (the paper's).
_base_ = './faster_rcnn_r50_neu_cbam.py'
model = dict(backbone=dict(
    type='AttentionResNet', stem_attention=dict(type='CBAM', ratio=16)))
