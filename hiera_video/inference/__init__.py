"""Using a trained model on video files: class predictions (whole videos or sliding windows), overlays, features.

`Predictor` scores a video exactly as the multi-view test does; tools/predict.py and tools/extract_features.py are
its command lines.
"""
from __future__ import annotations

from hiera_video.inference.predictor import ClassScore, Prediction, Predictor

__all__ = ["ClassScore", "Prediction", "Predictor"]
