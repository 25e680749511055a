#!/usr/bin/env python
"""Submit a config to Slurm through submitit.

`python tools/submit.py --help` lists the options; the installed command `hiera-submit` is the same tool.
Code: hiera_video/cli/submit.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.submit import main

if __name__ == "__main__":
    sys.exit(main())
