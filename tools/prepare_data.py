#!/usr/bin/env python
"""Prepare datasets: resize videos, write Kinetics-format lists, check them, cut AVA movies and extract frames.

    python tools/prepare_data.py {resize,csv,check,ava-cut,ava-frames} --help

The jobs live in hiera_video/data/preparation/ (see cli.py for the command line).
"""
from __future__ import annotations

import sys

from hiera_video.data.preparation.cli import main

if __name__ == "__main__":
    sys.exit(main())
