#!/usr/bin/env python
"""Per-class accuracy, confusions and the confusion matrix of a classification test, from its test_scores.npz.

`python tools/analyze_predictions.py --help` lists the options; the installed command `hiera-analyze-predictions` is
the same tool. Code: hiera_video/cli/analyze_predictions.py.
"""
from __future__ import annotations

import sys

from hiera_video.cli.analyze_predictions import main

if __name__ == "__main__":
    sys.exit(main())
