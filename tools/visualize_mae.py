#!/usr/bin/env python
"""Show what an MAE checkpoint reconstructs.

`python tools/visualize_mae.py --help` lists the options; the installed command `hiera-visualize-mae` is the same tool.
Code: hiera_video/cli/visualize_mae.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.visualize_mae import main

if __name__ == "__main__":
    sys.exit(main())
