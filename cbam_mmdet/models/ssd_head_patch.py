"""mmdet 3.3's SSDHead computes its own softmax cross-entropy and never sets ``loss_cls``,
but BaseDenseHead's prediction reads ``self.loss_cls``: SSD-style detectors (SSD300,
StairNet) fail at test time with "'SSDHead' object has no attribute 'loss_cls'"
(open-mmlab/mmdetection#11063, #11780; the fix #11524 is not in a release). Importing this
module gives SSDHead a read-only ``loss_cls``: the registered module of that name where a
subclass builds one, else None (softmax scores, as SSD's loss)."""
from mmdet.models.dense_heads import SSDHead


def registered_loss_cls(head):
    return head._modules.get('loss_cls')


if not hasattr(SSDHead, 'loss_cls'):
    SSDHead.loss_cls = property(registered_loss_cls)
