"""Draw AVA keyframes with their person boxes and top actions, one PNG per keyframe.

    python tools/visualize_ava.py --cfg configs/AVA/HIERA_L_16x224.yaml \\
        [--detections OUTPUT_DIR/detections.csv] [--groundtruth] [--num-keyframes 20] [--top-k 3] \\
        [--min-score 0.1] [--output-dir OUTPUT_DIR/visualize_ava] [KEY VALUE ...]

Frames come from the config's AVA layout (AVA.FRAME_DIR with the test frame lists, or AVA.VIDEO_DIR) and
AVA.FIRST_SECOND; class names from AVA.CLASS_SUBSET, else AVA.LABEL_MAP_FILE. Detected boxes are drawn in orange
with their `top-k` actions scoring at least `min-score`; with --groundtruth the boxes of AVA.GROUNDTRUTH_FILE are
drawn in green with their actions. Keyframes are taken in the order of the detections file. Writes
<video>_<second>.png files.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict

from PIL import Image, ImageDraw

from hiera_video.config import load_config
from hiera_video.data.ava import AvaVideos, evaluated_labelmap
from hiera_video.evaluation.ava.readers import read_labelmap

DETECTION_COLOUR = (255, 140, 0)
GROUNDTRUTH_COLOUR = (40, 220, 40)
# Frames are enlarged to at least this height so the labels stay readable on small videos.
MIN_DRAW_HEIGHT = 360

Box = tuple[float, float, float, float]
Keyframe = tuple[str, int]


def read_box_actions(path: str, score_column: bool) -> dict[Keyframe, dict[Box, list[tuple[float, int]]]]:
    """(video, second) -> box -> [(score, action)] from an AVA CSV (detections, or ground truth with score 1),
    keyframes in file order. Errors name the file and line."""
    boxes: dict[Keyframe, dict[Box, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        for line_number, row in enumerate(csv.reader(f), start=1):
            if len(row) < 7:
                continue  # a keyframe without boxes
            try:
                box = tuple(float(v) for v in row[2:6])
                action = int(row[6])
                score = float(row[7]) if score_column and len(row) > 7 else 1.0
                second = int(float(row[1]))
            except ValueError:
                raise ValueError(f"{path}:{line_number}: not an AVA row: {','.join(row)!r}") from None
            boxes[(row[0], second)][box].append((score, action))
    return boxes


def draw_keyframe(image: Image.Image, layers: list[tuple[dict[Box, list[tuple[float, int]]], tuple[int, int, int]]],
                  names: dict[int, str], top_k: int, min_score: float) -> Image.Image:
    """Boxes (normalised) and their best actions drawn on a copy of `image`, one colour per layer."""
    scale = max(1.0, MIN_DRAW_HEIGHT / image.height)
    canvas = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    for boxes, colour in layers:
        for (x1, y1, x2, y2), actions in boxes.items():
            corners = (x1 * width, y1 * height, x2 * width, y2 * height)
            draw.rectangle(corners, outline=colour, width=2)
            best = sorted(actions, reverse=True)[:top_k]
            lines = [f"{names.get(a, a)} {s:.2f}" for s, a in best if s >= min_score]
            y = corners[1] + 2
            for text in lines:
                left, top, right, bottom = draw.textbbox((corners[0] + 3, y), text)
                draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
                draw.text((corners[0] + 3, y), text, fill=colour)
                y = bottom + 2
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="the AVA config (data layout, label map, OUTPUT_DIR)")
    parser.add_argument("--detections", help="detections CSV (default: OUTPUT_DIR/detections.csv)")
    parser.add_argument("--groundtruth", action="store_true", help="also draw AVA.GROUNDTRUTH_FILE boxes")
    parser.add_argument("--num-keyframes", type=int, default=20, help="keyframes to draw (default 20)")
    parser.add_argument("--top-k", type=int, default=3, help="actions listed per detected box (default 3)")
    parser.add_argument("--min-score", type=float, default=0.0, help="leave out actions scoring lower")
    parser.add_argument("--output-dir", help="where the PNGs go (default: OUTPUT_DIR/visualize_ava)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.opts)
    annotation = lambda name: os.path.join(cfg.AVA.ANNOTATION_DIR, name)  # noqa: E731
    names = {entry["id"]: entry["name"] for entry in read_labelmap(evaluated_labelmap(cfg))[0]}
    detections = read_box_actions(args.detections or os.path.join(cfg.OUTPUT_DIR, "detections.csv"), True)
    groundtruth = read_box_actions(annotation(cfg.AVA.GROUNDTRUTH_FILE), False) if args.groundtruth else {}
    output_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "visualize_ava")
    os.makedirs(output_dir, exist_ok=True)
    videos = AvaVideos.from_cfg(cfg, "test")
    for video_id, second in list(detections)[:args.num_keyframes]:
        frame = videos.read_keyframe(video_id, second)
        layers = [(groundtruth.get((video_id, second), {}), GROUNDTRUTH_COLOUR),
                  (detections[(video_id, second)], DETECTION_COLOUR)]
        image = draw_keyframe(Image.fromarray(frame.numpy()), layers, names, args.top_k, args.min_score)
        path = os.path.join(output_dir, f"{video_id}_{second:04d}.png")
        image.save(path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
