# + SE on every detection feature level, after SSDNeck and before the head
# (the paper's placement "before every classifier"); VGG16 itself is unchanged.
_base_ = './ssd300_vgg16_voc0712.py'
model = dict(neck=dict(
    _delete_=True, type='NeckAttention', neck={{_base_.model.neck}},
    attention=dict(type='SE', ratio=16)))
