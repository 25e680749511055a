#!/usr/bin/env python
"""Draw AVA keyframes with their boxes and top actions.

`python tools/visualize_ava.py --help` lists the options; the installed command `hiera-visualize-ava` is the same tool.
Code: hiera_video/cli/visualize_ava.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.visualize_ava import main

if __name__ == "__main__":
    sys.exit(main())
