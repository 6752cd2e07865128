# Placement, both: CBAM on the stem's output and on every FPN output level.
_base_ = './faster_rcnn_r50_neu_cbam_stem.py'
model = dict(neck=dict(
    _delete_=True, type='NeckAttention', neck={{_base_.model.neck}},
    attention=dict(type='CBAM', ratio=16)))
