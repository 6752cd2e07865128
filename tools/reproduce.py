"""Train and test every variant of a preset (with ``--seeds N``, N times each) and write the
comparison; exits with 1 when a run failed (its row says why). Examples in the README.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.reproduce import main  # noqa: E402

if __name__ == '__main__':
    results = main()
    sys.exit(1 if results and any(r['status'] != 'ok' for r in results) else 0)
