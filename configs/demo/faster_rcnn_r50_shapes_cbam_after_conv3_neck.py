# Placement study: both, CBAM at the end of every backbone block (after conv3, the
# paper) and on every FPN output level (after the neck).
_base_ = './faster_rcnn_r50_shapes_cbam.py'
model = dict(neck=dict(
    _delete_=True, type='NeckAttention', neck={{_base_.model.neck}},
    attention=dict(type='CBAM', ratio=16)))
