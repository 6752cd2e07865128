"""``python -m cbam_mmdet.reproduce``: tools/reproduce.py, or one variant's subprocess."""
import json
import sys

from . import main, run_variant

if len(sys.argv) == 3 and sys.argv[1] == '--worker':
    run_variant(json.loads(sys.argv[2]))
else:
    main()
