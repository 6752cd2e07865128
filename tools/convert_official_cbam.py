"""Convert an official ResNet + CBAM ImageNet checkpoint (Jongchan/attention-module) into
a backbone checkpoint for mmdet's ResNet + CBAM plugin.

    python tools/convert_official_cbam.py RESNET50_CBAM.pth checkpoints/resnet50_cbam_mmdet.pth

Start a detector from it with a Pretrained init_cfg (configs/pretrained/). Any key
that does not map is an error and nothing is written.
"""
import functools
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.convert.cli import main as convert_main  # noqa: E402

main = functools.partial(convert_main, 'official_cbam', __doc__)

if __name__ == '__main__':
    main()
