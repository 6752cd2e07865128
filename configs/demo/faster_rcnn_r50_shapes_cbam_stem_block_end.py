# Placement study, both: CBAM on the stem's output and at the end of every block (after
# conv3, the paper).
_base_ = './faster_rcnn_r50_shapes_cbam.py'
model = dict(backbone=dict(
    type='AttentionResNet', stem_attention=dict(type='CBAM', ratio=16)))
