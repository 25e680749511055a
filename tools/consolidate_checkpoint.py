#!/usr/bin/env python
"""Turn a sharded checkpoint folder (TRAIN.PARALLELISM fsdp) into one .pyth file.

`python tools/consolidate_checkpoint.py --help` lists the options; the installed command
`hiera-consolidate-checkpoint` is the same tool. Code: hiera_video/cli/consolidate_checkpoint.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.consolidate_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
