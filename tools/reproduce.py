"""Train and test every variant of a preset and write the paper-style comparison.

    python tools/reproduce.py --preset demo --work-dir work_dirs/demo
    python tools/reproduce.py --preset mini --data-root data/bccd/ --device-name "1x H100"
    python tools/reproduce.py --preset coco-r50 [--collect]   # commands, or the table

Exits with 1 when a variant failed (its row in the table says why).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.reproduce import main  # noqa: E402

if __name__ == '__main__':
    results = main()
    sys.exit(1 if results and any(r['status'] != 'ok' for r in results) else 0)
