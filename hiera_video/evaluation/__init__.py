"""Metrics: top-k errors and multi-view aggregation (classification), AVA frame-mAP (ava)."""
