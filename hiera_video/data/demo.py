"""The built-in demo dataset: small real mp4 videos whose class is the direction a pattern moves.

Each video shows a pattern sliding left, right, up or down (and, with more than four classes, along the
diagonals) at a random speed from a random starting position, so a single frame says nothing about the class; only
motion over time does. The pattern (`pattern`) is either
- "texture": a random, smooth, two-colour texture, its colours drawn per video, or
- "plaid": three gray gratings (wavelength a quarter of the frame, at 0, 60 and 120 degrees) with random phases,
  the same pattern family in every video: what is masked in one frame follows from the visible frames and the
  motion, which the MAE demo (HIERA_DEMO_MAE.yaml) learns within minutes (README, "Does MAE pretraining help?").
Harder variants blend in a second, weaker layer of the same kind moving along a random direction (`distractor`)
and add independent Gaussian noise to every pixel (`noise`, in gray levels). Because the classes are directions,
horizontal flipping swaps "left" and "right": train on it with flipping off (DATA.RANDOM_FLIP False), as for SSv2.

Layout under `root` (Kinetics format, paths relative to root, so set DATA.PATH_PREFIX to root):
    train.csv val.csv test.csv       "<split>/<class>_<nnn>.mp4 <label>" lines
    classes.txt                      the class names in label order (used when MODEL.CLASS_NAMES is empty)
    train/ val/ test/                the mp4 files (H.264, yuv420p)
    demo_dataset.json                the parameters; written last, marks a complete dataset
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from hiera_video.data.class_names import CLASSES_FILE
from hiera_video.data.video_io import write_video

# The first four are the default demo; the diagonals make the harder one (8 classes). (dx, dy) on screen.
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
              "up-left": (-1, -1), "down-right": (1, 1), "up-right": (1, -1), "down-left": (-1, 1)}
CLASS_NAMES = tuple(DIRECTIONS)
SPLITS = ("train", "val", "test")
MANIFEST = "demo_dataset.json"
PATTERNS = ("texture", "plaid")
SPEED_RANGE = (0.5, 1.0)  # pixels per frame
PLAID_ANGLES = (0.0, np.pi / 3, 2 * np.pi / 3)  # grating orientations, radians
TEXTURE_SMOOTHING = 2.0  # Gaussian blur sigma in pixels: features large enough to track, small enough to see
# Settings added after the first release, with the values a manifest that lacks them was made with: a manifest
# records them only when they differ, so folders written before they existed still match their parameters.
OPTIONAL_DEFAULTS = {"distractor": 0.0, "pattern": "texture", "noise": 0.0}


def _texture_spectrum(rng: np.random.Generator, period: int) -> np.ndarray:
    """Fourier coefficients of a periodic Gaussian-blurred noise texture with unit standard deviation."""
    spectrum = np.fft.fft2(rng.standard_normal((period, period)))
    frequency = np.fft.fftfreq(period)
    squared = frequency[:, None] ** 2 + frequency[None, :] ** 2
    spectrum *= np.exp(-2 * (np.pi * TEXTURE_SMOOTHING) ** 2 * squared)
    spectrum[0, 0] = 0
    return spectrum * (period**2 / np.sqrt(np.sum(np.abs(spectrum) ** 2)))  # Parseval: unit pixel variance


def render_moving_texture(
    rng: np.random.Generator, direction: tuple[int, int], num_frames: int, size: int, distractor: float = 0.0,
    pattern: str = "texture", noise: float = 0.0,
) -> np.ndarray:
    """uint8 frames [num_frames, size, size, 3] of a random `pattern` moving along `direction` (dx, dy).

    Shifts are sub-pixel exact: a texture is periodic (period 2 * size, so no wrap shows in the frame) and is
    shifted by a phase ramp in the Fourier domain; a plaid is a sum of cosines. A diagonal direction moves at the
    same speed per axis. With `distractor` > 0, a second random layer moving along a random one of the eight
    directions is blended in with that weight (transparent motion): the class is the direction of the stronger
    layer. `noise` > 0 adds Gaussian noise of that standard deviation (gray levels) to every pixel and channel.
    """
    layer = _moving_texture if pattern == "texture" else _moving_plaid
    frames = layer(rng, direction, num_frames, size)
    if distractor > 0:
        other = DIRECTIONS[CLASS_NAMES[rng.integers(len(CLASS_NAMES))]]
        frames = (1 - distractor) * frames + distractor * layer(rng, other, num_frames, size)
    if noise > 0:
        frames = frames + rng.normal(0.0, noise, frames.shape)
    return np.round(np.clip(frames, 0, 255)).astype(np.uint8)


def _moving_plaid(rng: np.random.Generator, direction: tuple[int, int], num_frames: int, size: int) -> np.ndarray:
    """float frames in [0, 255] of one plaid layer (see render_moving_texture)."""
    velocity = rng.uniform(*SPEED_RANGE) * np.asarray(direction, dtype=float)
    y, x = np.mgrid[:size, :size].astype(float)
    times = np.arange(num_frames)[:, None, None]
    level = np.zeros((num_frames, size, size))
    for angle in PLAID_ANGLES:
        kx, ky = 2 * np.pi / (size / 4) * np.cos(angle), 2 * np.pi / (size / 4) * np.sin(angle)
        level += np.cos(kx * (x - velocity[0] * times) + ky * (y - velocity[1] * times) + rng.uniform(0, 2 * np.pi))
    return np.repeat((127.5 + 35.0 * level)[..., None], 3, axis=-1)  # |level| <= 3: within [22, 233]


def _moving_texture(rng: np.random.Generator, direction: tuple[int, int], num_frames: int, size: int) -> np.ndarray:
    """float frames in [0, 255] of one texture layer (see render_moving_texture)."""
    period = 2 * size
    spectrum = _texture_spectrum(rng, period)[:, : period // 2 + 1]  # real texture: half the spectrum suffices
    speed = rng.uniform(*SPEED_RANGE)
    origin = rng.uniform(0, period, size=2)
    dark, bright = rng.uniform(0, 110, size=3), rng.uniform(145, 255, size=3)
    # The window's top-left corner moves against the texture: content moving right = window moving left.
    times = np.arange(num_frames)[:, None]
    x0 = origin[0] - speed * direction[0] * times
    y0 = origin[1] - speed * direction[1] * times
    ramp_y = np.exp(2j * np.pi * np.fft.fftfreq(period)[None] * y0)[:, :, None]
    ramp_x = np.exp(2j * np.pi * np.fft.rfftfreq(period)[None] * x0)[:, None, :]
    texture = np.fft.irfft2(spectrum * ramp_y * ramp_x, s=(period, period))[:, :size, :size]
    level = np.clip(0.5 + texture / 4, 0.0, 1.0)[..., None]
    return dark + level * (bright - dark)


def _parameters(num_classes, train_per_class, val_per_class, test_per_class, num_frames, size, fps, seed,
                distractor, pattern, noise) -> dict:
    optional = {"distractor": distractor, "pattern": pattern, "noise": noise}
    return {key: value for key, value in optional.items() if value != OPTIONAL_DEFAULTS[key]} | {
        "class_names": list(CLASS_NAMES[:num_classes]),
        "per_class": {"train": train_per_class, "val": val_per_class, "test": test_per_class},
        "num_frames": num_frames,
        "size": size,
        "fps": fps,
        "seed": seed,
    }


def _write_all(folder: str, params: dict) -> None:
    for split_index, split in enumerate(SPLITS):
        os.makedirs(os.path.join(folder, split))
        lines = []
        for label, name in enumerate(params["class_names"]):
            for i in range(params["per_class"][split]):
                rng = np.random.default_rng((params["seed"], split_index, label, i))
                frames = render_moving_texture(rng, DIRECTIONS[name], params["num_frames"], params["size"],
                                               **optional_settings(params))
                relative = f"{split}/{name}_{i:03d}.mp4"
                write_video(os.path.join(folder, relative), frames, fps=params["fps"])
                lines.append(f"{relative} {label}\n")
        with open(os.path.join(folder, f"{split}.csv"), "w") as f:
            f.writelines(lines)
    with open(os.path.join(folder, CLASSES_FILE), "w") as f:
        f.writelines(f"{name}\n" for name in params["class_names"])
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(params, f, indent=1)


def read_manifest(root: str) -> dict | None:
    """The parameters of the demo dataset in `root`, or None when it holds none."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def optional_settings(params: dict) -> dict:
    """The optional settings (OPTIONAL_DEFAULTS' keys) of a demo dataset's parameters or manifest."""
    return {key: params.get(key, default) for key, default in OPTIONAL_DEFAULTS.items()}


def _describe(root: str, params: dict) -> dict:
    return {
        "root": root,
        "path_prefix": root,
        "csv": {split: os.path.join(root, f"{split}.csv") for split in SPLITS},
        "class_names": params["class_names"],
        "num_classes": len(params["class_names"]),
        "num_videos": {split: params["per_class"][split] * len(params["class_names"]) for split in SPLITS},
        "num_frames": params["num_frames"],
        "size": params["size"],
        "fps": params["fps"],
    }


def _check_existing(root: str, params: dict) -> bool:
    """True when `root` already holds this exact dataset; raises when it holds anything else."""
    if not os.path.isdir(root) or not os.listdir(root):
        return False
    existing = read_manifest(root)
    if existing is None:
        raise FileExistsError(f"{root} is not empty and holds no {MANIFEST}; refusing to write the demo dataset there")
    if existing != params:
        raise FileExistsError(
            f"{root} holds a demo dataset made with other parameters ({existing}); remove it or choose another root"
        )
    return True


def write_demo_dataset(
    root: str,
    num_classes: int = 4,
    train_per_class: int = 32,
    val_per_class: int = 8,
    test_per_class: int = 10,
    num_frames: int = 48,
    size: int = 64,
    fps: int = 30,
    seed: int = 0,
    distractor: float = 0.0,
    pattern: str = "texture",
    noise: float = 0.0,
) -> dict:
    """Write the demo dataset into `root` (created if missing, or an empty folder) and describe it.

    Idempotent: a root already holding the same dataset is left as it is. The files are written into a
    temporary sibling folder that is renamed to `root` at the end, so a crash never leaves half a dataset and
    concurrent writers (e.g. several ranks) all end up with one complete copy.
    Returns {"root", "path_prefix", "csv": {split: path}, "class_names", "num_classes",
    "num_videos": {split: n}, "num_frames", "size", "fps"}.
    """
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must lie in [2, {len(CLASS_NAMES)}], got {num_classes}")
    if not 0.0 <= distractor < 0.5:
        raise ValueError(f"distractor must lie in [0, 0.5), so the class's texture stays the stronger one; got "
                         f"{distractor}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (gray levels), got {noise}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if num_frames < 2 or min(train_per_class, val_per_class, test_per_class) < 1:
        raise ValueError("num_frames must be >= 2 and every split needs at least one video per class")
    root = os.path.abspath(root)
    params = _parameters(num_classes, train_per_class, val_per_class, test_per_class, num_frames, size, fps, seed,
                         distractor, pattern, noise)
    if _check_existing(root, params):
        return _describe(root, params)
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the dataset should be readable like any folder
    try:
        _write_all(staging, params)
        try:
            os.replace(staging, root)  # atomic; replaces `root` only if it is an empty folder
        except OSError:
            if not _check_existing(root, params):  # lost a race against another writer of the same dataset
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _describe(root, params)
