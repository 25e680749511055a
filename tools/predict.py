#!/usr/bin/env python
"""Predict the classes of video files (whole videos or sliding windows), with JSON output and overlays.

`python tools/predict.py --help` lists the options; the installed command `hiera-predict` is the same tool.
Code: hiera_video/cli/predict.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
