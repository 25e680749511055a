"""Install hiera_video: `pip install -e ".[test]"`."""
from __future__ import annotations

from setuptools import find_packages, setup

setup(
    name="hiera_video",
    version="0.1.0",
    description="Video action recognition and detection with the 3D Hiera transformer: "
    "MAE pretraining, Kinetics/SSv2 fine-tuning, AVA detection, Slurm launching.",
    packages=find_packages(include=["hiera_video", "hiera_video.*"]),
    # The shipped class-name lists (MODEL.CLASS_NAMES kinetics400 / kinetics600 / kinetics700).
    package_data={"hiera_video.data": ["class_lists/*.txt"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.6",  # FSDP2 (torch.distributed.fsdp.fully_shard) for TRAIN.PARALLELISM fsdp
        "torchvision>=0.16",
        "pytorchvideo>=0.1.5",
        "decord>=0.6.0",
        "fvcore>=0.1.5.post20221221",
        "iopath>=0.1.9",
        "simplejson>=3.17",
        "av>=10.0",
        "submitit>=1.5",
        "cloudpickle>=2.0",
        "numpy>=1.23",
        "tensorboard>=2.12",
        "tqdm>=4.64",
        "filelock>=3.0",
        "matplotlib>=3.6",
        "pillow>=10.1",  # the overlay font of tools/predict.py (ImageFont.load_default(size=...))
    ],
    entry_points={
        "console_scripts": [  # the same tools as `python tools/<name>.py` in a clone
            "hiera-run = hiera_video.cli.run_net:main",
            "hiera-submit = hiera_video.cli.submit:main",
            "hiera-ava-eval = hiera_video.cli.ava_eval:main",
            "hiera-model-info = hiera_video.cli.model_info:main",
            "hiera-plot-logs = hiera_video.cli.plot_logs:main",
            "hiera-visualize-ava = hiera_video.cli.visualize_ava:main",
            "hiera-visualize-mae = hiera_video.cli.visualize_mae:main",
            "hiera-prepare-data = hiera_video.data.preparation.cli:main",
            "hiera-analyze-predictions = hiera_video.cli.analyze_predictions:main",
            "hiera-predict = hiera_video.cli.predict:main",
            "hiera-extract-features = hiera_video.cli.extract_features:main",
            "hiera-consolidate-checkpoint = hiera_video.cli.consolidate_checkpoint:main",
        ],
    },
    extras_require={
        "test": ["pytest>=7.4", "scikit-video>=1.1.11", "hiera-transformer==0.1.4"],
        # An extra, not a requirement: torchcodec decodes only with FFmpeg's shared libraries, which pip cannot
        # install, and each release is built for one range of torch versions (0.17: torch 2.14), which this
        # package's torch>=2.1 does not pin. Without it (or without FFmpeg) DATA.DECODING_BACKEND auto uses decord.
        "torchcodec": ["torchcodec"],
        "benchmark": ["hiera-transformer==0.1.4", "py-spy>=0.3"],
        # The linters .ci/run and .pre-commit-config.yaml run, pinned so a new release cannot break CI.
        "dev": ["ruff==0.17.6", "mypy==2.4.1", "import-linter==2.17", "pre-commit>=3.5"],
    },
)
