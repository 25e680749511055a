"""The command line of tools/prepare_data.py: one subcommand per preparation job.

    prepare_data.py resize SRC DST --short-side 320 [--fps F] [--crf 23] [--keep-audio]
    prepare_data.py csv ROOT --out DIR [--splits train,val,test] [--val-fraction F --seed S] [--annotations CSV ...]
    prepare_data.py check DIR [--decode header|full] [--path-prefix P] [--replace]
    prepare_data.py ava-cut MOVIES DST
    prepare_data.py ava-frames VIDEOS DST --fps 30 (--annotation-dir DIR | --train-list F --val-list F)

Every subcommand but csv (which only lists file names, with nothing to share out) takes --workers N (default: the
usable CPU cores) and shows a progress bar on a terminal; all skip outputs finished by an earlier run, list bad
inputs instead of stopping, and print a summary. The exit status is
0 when the run completed (even with failed inputs, which the summary counts and a CSV lists), 2 when it could
not start (a missing folder, a malformed annotation file) and 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import Callable

from hiera_video.data.preparation import ava, check, lists, resize
from hiera_video.data.preparation.common import codec_threads, default_workers, summary
from hiera_video.data.video_io import BACKEND_CHOICES


def _split_names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated split names, e.g. train,val,test")
    return names


def _rate(text: str) -> Fraction:
    try:
        return resize.parse_rate(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_parallel(parser: argparse.ArgumentParser, threads: bool = True) -> None:
    parser.add_argument("--workers", type=_positive, default=default_workers(),
                        help="worker processes (default: the usable CPU cores, %(default)s here)")
    if threads:
        parser.add_argument("--threads", type=int, default=None,
                            help="FFmpeg threads per worker (default: automatic with one worker, else the cores "
                                 "shared out between the workers)")


def _threads(args: argparse.Namespace) -> int:
    return codec_threads(args.workers) if args.threads is None else args.threads


# ----------------------------------------------------------------------------------------------- subcommands


def run_resize(args: argparse.Namespace) -> str:
    options = resize.ResizeOptions(short_side=args.short_side, fps=args.fps, crf=args.crf, preset=args.preset,
                                   keep_audio=args.keep_audio, threads=_threads(args))
    outcomes = resize.resize_videos(args.src, args.dst, options, args.workers)
    return summary("resize", outcomes, f"{args.dst}/{resize.FAILURES_FILE}")


def run_csv(args: argparse.Namespace) -> str:
    made = lists.make_lists(args.root, args.out, args.splits, args.val_fraction, args.seed, args.annotations or (),
                            args.classes)
    return lists.summary(made, args.out)


def run_check(args: argparse.Namespace) -> str:
    report = check.check_lists(args.dir, args.splits, args.path_prefix, args.decode, args.workers, args.separator,
                               args.backend, args.replace)
    return check.summary(report, args.dir)


def run_ava_cut(args: argparse.Namespace) -> str:
    options = ava.CutOptions(start=args.start, duration=args.duration, crf=args.crf, preset=args.preset,
                             threads=_threads(args))
    outcomes = ava.cut_movies(args.movies, args.dst, options, args.workers)
    copied = sum(1 for o in outcomes if o.detail == "copied")
    text = summary("ava-cut", outcomes, f"{args.dst}/{ava.CUT_FAILURES}")
    return text + f"\nava-cut: {copied} stream-copied, {sum(o.detail == 're-encoded' for o in outcomes)} re-encoded"


def run_ava_frames(args: argparse.Namespace) -> str:
    if args.annotation_dir:
        splits = ava.ids_from_annotations(args.annotation_dir)
    else:
        splits = {"train": ava.read_id_list(args.train_list), "val": ava.read_id_list(args.val_list)}
    options = ava.FramesOptions(fps=args.fps, quality=args.quality, threads=_threads(args))
    report = ava.extract_all(args.videos, args.dst, splits, options, args.workers, args.frame_list_dir)
    return summary("ava-frames", report.outcomes, f"{args.dst}/{ava.FRAMES_FAILURES}") + "\n" + \
        ava.frames_summary(report)


# ----------------------------------------------------------------------------------------------- parser


def _resize_parser(sub) -> None:
    p = sub.add_parser("resize", help="transcode videos to H.264 mp4 with a given short side",
                       description=resize.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="folder of source videos (searched recursively)")
    p.add_argument("dst", help="output folder: the same relative paths, extension .mp4")
    p.add_argument("--short-side", type=int, default=320, help="output short side in pixels (even; default 320)")
    p.add_argument("--fps", type=_rate, default=None, help="output frame rate, e.g. 30 or 30000/1001 (default: "
                                                           "the source's)")
    p.add_argument("--crf", type=int, default=23, help="libx264 constant rate factor (default 23, ffmpeg's)")
    p.add_argument("--preset", default="medium", help="libx264 preset (default medium, ffmpeg's)")
    p.add_argument("--keep-audio", action="store_true", help="keep the first audio track (copied if AAC/MP3, "
                                                             "else encoded to AAC); default: no audio")
    _add_parallel(p)
    p.set_defaults(run=run_resize)


def _csv_parser(sub) -> None:
    p = sub.add_parser("csv", help="write Kinetics-format train/val/test lists and classes.txt",
                       description=lists.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="dataset folder; list paths are relative to it (DATA.PATH_PREFIX)")
    p.add_argument("--out", required=True, help="folder for the lists (DATA.PATH_TO_DATA_DIR)")
    p.add_argument("--splits", type=_split_names, default=list(lists.SPLITS), help="lists to write (default "
                                                                                   "train,val,test)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="class-folder layout: share of each class "
                                                                   "for val (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="class-folder layout: seed of the split (default 0)")
    p.add_argument("--annotations", nargs="+", metavar="CSV", help="official Kinetics annotation CSVs (label,"
                                                                   "youtube_id,time_start,time_end,split)")
    p.add_argument("--classes", metavar="FILE", help="class names in label order, one per line (default: the "
                                                     "sorted names found)")
    p.set_defaults(run=run_csv)  # no --workers: listing names is one walk of the folder tree, seconds for 650k videos


def _check_parser(sub) -> None:
    p = sub.add_parser("check", help="open every listed video; write bad_videos.csv and cleaned lists",
                       description=check.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="folder of the lists (<split>.csv)")
    p.add_argument("--decode", choices=check.DECODE_MODES, default="header",
                   help="header: open each video; full: also decode clips at its start, middle and end")
    p.add_argument("--path-prefix", default=None, help="folder the listed paths are relative to (default: DIR)")
    p.add_argument("--splits", type=_split_names, default=["train", "val", "test"], help="lists to check")
    p.add_argument("--separator", default=" ", help="path/label separator (DATA.PATH_LABEL_SEPARATOR)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="reader backend, as DATA.DECODING_BACKEND (default auto: torchcodec if it finds FFmpeg's "
                        "libraries, else decord, else PyAV; torchcodec and decord fall back to PyAV for a file they "
                        "cannot open)")
    p.add_argument("--replace", action="store_true", help="write the cleaned lists as <split>.csv, keeping the "
                                                          "originals as <split>.orig.csv (default: "
                                                          "<split>.clean.csv)")
    _add_parallel(p, threads=False)
    p.set_defaults(run=run_check)


def _ava_cut_parser(sub) -> None:
    p = sub.add_parser("ava-cut", help="cut the annotated 15 minutes (900-1801 s) of each AVA movie",
                       description=ava.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("movies", help="folder of the movies, <video_id>.<ext>")
    p.add_argument("dst", help="output folder: <video_id>.<ext> (AVA.VIDEO_DIR)")
    p.add_argument("--start", type=float, default=ava.SEGMENT_START, help="segment start in seconds (900)")
    p.add_argument("--duration", type=float, default=ava.SEGMENT_DURATION, help="segment length in seconds (901)")
    p.add_argument("--crf", type=int, default=18, help="libx264 CRF when a segment is re-encoded (default 18)")
    p.add_argument("--preset", default="medium", help="libx264 preset when a segment is re-encoded")
    _add_parallel(p)
    p.set_defaults(run=run_ava_cut)


def _ava_frames_parser(sub) -> None:
    p = sub.add_parser("ava-frames", help="extract JPEG frames of AVA videos and write the frame lists",
                       description=ava.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", help="folder of the (cut) videos, <video_id>.<ext>")
    p.add_argument("dst", help="output folder: <video>/<video>_%%06d.jpg (AVA.FRAME_DIR)")
    p.add_argument("--fps", type=_rate, default=Fraction(30), help="frames per second to extract (default 30)")
    p.add_argument("--quality", type=int, default=2, help="JPEG quantiser, 2 (best) to 31 (default 2)")
    p.add_argument("--frame-list-dir", default=None, help="where {train,val}.csv go (AVA.FRAME_LIST_DIR; default "
                                                          "frame_lists next to DST, PySlowFast's layout)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotation-dir", help="AVA annotation folder: the ids of ava_train_v2.2.csv and "
                                                 "ava_val_v2.2.csv")
    source.add_argument("--train-list", help="file of train video ids, one per line (with --val-list)")
    p.add_argument("--val-list", help="file of val video ids, one per line")
    _add_parallel(p)
    p.set_defaults(run=run_ava_frames)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prepare_data.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_resize_parser, _csv_parser, _check_parser, _ava_cut_parser, _ava_frames_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "ava-frames" and args.train_list and not args.val_list:
        parser.error("ava-frames: --train-list needs --val-list")
    run: Callable[[argparse.Namespace], str] = args.run
    try:
        print(run(args), flush=True)
    except (FileNotFoundError, ValueError) as error:
        print(f"prepare_data.py {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prepare_data.py {args.command}: interrupted; finished outputs are kept, run it again to resume",
              file=sys.stderr)
        return 130
    return 0
