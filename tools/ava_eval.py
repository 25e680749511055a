#!/usr/bin/env python
"""AVA frame-mAP@0.5IoU of a detection CSV, as the official evaluator computes it.

`python tools/ava_eval.py --help` lists the options; the installed command `hiera-ava-eval` is the same tool.
Code: hiera_video/cli/ava_eval.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.ava_eval import main

if __name__ == "__main__":
    sys.exit(main())
