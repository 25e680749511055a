#!/usr/bin/env python
"""Train and/or test a config.

`python tools/run_net.py --help` lists the options; the installed command `hiera-run` is the same tool.
Code: hiera_video/cli/run_net.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.run_net import main

if __name__ == "__main__":
    sys.exit(main())
