"""Convert a timm SE-ResNet state dict (seresnet18/34/50/101/152) into
a backbone checkpoint for mmdet's ResNet + SE plugin.

    python tools/convert_timm_seresnet.py seresnet50.pth checkpoints/seresnet50_mmdet.pth

Start a detector from it with a Pretrained init_cfg (configs/pretrained/). Any key
that does not map is an error and nothing is written.
"""
import functools
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.convert.cli import main as convert_main  # noqa: E402

main = functools.partial(convert_main, 'timm_seresnet', __doc__)

if __name__ == '__main__':
    main()
