#!/usr/bin/env python
"""Parameters, GMACs, activations and forward speed of a named model.

`python tools/model_info.py --help` lists the options; the installed command `hiera-model-info` is the same tool.
Code: hiera_video/cli/model_info.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.model_info import main

if __name__ == "__main__":
    sys.exit(main())
