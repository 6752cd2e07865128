# Placement study: the backbone unchanged, CBAM on every FPN output level (after the
# neck, before the RPN and RoI heads), the paper's "before every classifier" placement.
_base_ = './faster_rcnn_r50_shapes.py'
model = dict(neck=dict(
    _delete_=True, type='NeckAttention', neck={{_base_.model.neck}},
    attention=dict(type='CBAM', ratio=16)))
