#!/usr/bin/env python
"""Plot training curves from json_stats.log files.

`python tools/plot_logs.py --help` lists the options; the installed command `hiera-plot-logs` is the same tool.
Code: hiera_video/cli/plot_logs.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.plot_logs import main

if __name__ == "__main__":
    sys.exit(main())
