#!/usr/bin/env python
"""Extract features of many videos (one .npy per video, resumable, sharded under torchrun or Slurm).

`python tools/extract_features.py --help` lists the options; the installed command `hiera-extract-features` is the
same tool. Code: hiera_video/cli/extract_features.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.extract_features import main

if __name__ == "__main__":
    sys.exit(main())
