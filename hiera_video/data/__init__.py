"""Data: decoding (video_io), temporal sampling, transforms, datasets (Kinetics, SSv2, AVA, the demo), loaders and
the dataset registry (build)."""
