"""tools/extract_features.py on real mp4 files: what the features are, windows and maps, bad videos, a killed run
resumed to the same outputs, shards that are disjoint and complete (by hand, and under torchrun); tools/submit.py's
extract-features checked without a cluster (tests/slurm/test_submit_features.py submits one)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cloudpickle
import numpy as np
import pytest
import submitit
import torch

from hiera_video.cli import submit as submit_cli
from hiera_video.cli.extract_features import main as extract_main
from hiera_video.config import load_config
from hiera_video.data.build import video_views
from hiera_video.data.clip_dataset import decode_clips
from hiera_video.data.demo import write_demo_dataset
from hiera_video.data.video_io import open_video
from hiera_video.engine.checkpoint import save_checkpoint
from hiera_video.engine.slurm import SlurmCommand
from hiera_video.inference.features import PARTS_FOLDER
from hiera_video.models.build import build_model
from video_factory import make_empty_file, make_long_video, make_truncated_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")
TOOL = os.path.join(REPO, "tools", "extract_features.py")
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_STEP_ID", "SLURM_PROCID",
                    "SUBMITIT_EXECUTOR")


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    """Whatever launched pytest, the tool starts as one process unless a test sets the launcher's variables."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """24 demo videos in train/ and test/ folders, the demo config and a checkpoint of its model."""
    root = tmp_path_factory.mktemp("features")
    data = str(root / "motion")
    write_demo_dataset(data, train_per_class=3, val_per_class=1, test_per_class=3)
    opts = ["DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "DATA_LOADER.NUM_WORKERS", "0"]
    cfg = load_config(DEMO_CFG, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = str(root / "weights.pyth")
    save_checkpoint(weights, {"model_state": model.state_dict()})
    videos = sorted(os.path.relpath(os.path.join(folder, name), data) for folder, _, names in os.walk(data)
                    for name in names if name.endswith(".mp4"))
    assert len(videos) == 28
    return root, data, opts, cfg, weights, videos


def read_index(out_dir) -> list[dict]:
    with open(os.path.join(out_dir, "index.csv")) as f:
        return list(csv.DictReader(f))


def outputs(out_dir) -> dict[str, np.ndarray]:
    """Every .npy under `out_dir` by relative path (the hidden index folder excluded)."""
    found = {}
    for folder, subfolders, names in os.walk(out_dir):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            if name.endswith(".npy"):
                path = os.path.join(folder, name)
                found[os.path.relpath(path, out_dir)] = np.load(path)
    return found


def test_pooled_last_stage_features_are_the_classifier_heads_input(demo, tmp_path):
    root, data, opts, cfg, weights, videos = demo
    one_view = ["TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1"]
    inputs = [os.path.join(data, "test", name) for name in ("left_000.mp4", "up_001.mp4")]
    assert extract_main(["--cfg", DEMO_CFG, "--weights", weights, "--input", *inputs, "--output", str(tmp_path),
                         *opts, *one_view]) == 0
    one_cfg = load_config(DEMO_CFG, opts + one_view)
    model = build_model(one_cfg).eval()
    model.load_state_dict(torch.load(weights, weights_only=True)["model_state"])
    plan_views, transform = video_views(one_cfg)
    for path in inputs:
        features = np.load(tmp_path / (os.path.basename(path)[:-4] + ".npy"))
        assert features.shape == (1, 256) and features.dtype == np.float32
        with open_video(path) as reader, torch.no_grad():
            clip = decode_clips(reader, plan_views, transform, np.random.default_rng(0))
            logits = model(clip)
            torch.testing.assert_close(model.head(torch.from_numpy(features)), logits, atol=1e-5, rtol=0)
    rows = read_index(tmp_path)
    assert [(r["video"], r["file"], r["windows"], r["start"], r["end"], r["shape"]) for r in rows] == [
        ("left_000.mp4", "left_000.npy", "1", "0.000", "1.600", "1x256"),
        ("up_001.mp4", "up_001.npy", "1", "0.000", "1.600", "1x256")]


def test_windowed_feature_maps_of_a_long_video(demo, tmp_path):
    root, data, opts, cfg, weights, videos = demo
    long_video = str(tmp_path / "long.mp4")
    make_long_video(long_video, [os.path.join(data, v) for v in videos[:6]], seconds=9.6, fps=30)
    out = tmp_path / "maps"
    assert extract_main(["--cfg", DEMO_CFG, "--weights", weights, "--input", long_video, "--output", str(out),
                         "--stage", "1", "--pool", "none", "--window", "3.2", "--stride", "1.6", *opts]) == 0
    maps = np.load(out / "long.npy")
    model = build_model(cfg)
    assert maps.shape == (5, *model.stage_shapes[1], model.stage_dims[1]) == (5, 4, 8, 8, 64)
    [row] = read_index(out)
    assert row["start"] == "0.000 1.600 3.200 4.800 6.400" and row["end"] == "3.200 4.800 6.400 8.000 9.600"
    assert row["shape"] == "5x4x8x8x64" and not np.allclose(maps[0], maps[1])


def test_bad_videos_are_skipped_listed_and_retried(demo, tmp_path):
    root, data, opts, cfg, weights, videos = demo
    folder = tmp_path / "videos"
    shutil.copytree(os.path.join(data, "val"), folder)
    make_truncated_video(str(folder / "cut.mp4"))
    make_empty_file(str(folder / "empty.mp4"))
    out = tmp_path / "out"
    args = ["--cfg", DEMO_CFG, "--weights", weights, "--input", str(folder), "--output", str(out), *opts]
    assert extract_main(args) == 0
    assert sorted(outputs(out)) == ["down_000.npy", "left_000.npy", "right_000.npy", "up_000.npy"]
    with open(out / "failed.csv") as f:
        failed = {row["video"]: row["error"] for row in csv.DictReader(f)}
    assert sorted(failed) == ["cut.mp4", "empty.mp4"] and "empty" in failed["empty.mp4"]
    os.remove(folder / "empty.mp4")
    shutil.copy(os.path.join(data, "test", "left_000.mp4"), folder / "empty.mp4")  # fixed: the rerun takes it
    assert extract_main(args) == 0
    assert "empty.npy" in outputs(out) and len(read_index(out)) == 5
    with open(out / "failed.csv") as f:
        assert [row["video"] for row in csv.DictReader(f)] == ["cut.mp4"]


def test_a_video_list_writes_at_its_relative_paths(demo, tmp_path):
    root, data, opts, cfg, weights, videos = demo
    assert extract_main(["--cfg", DEMO_CFG, "--weights", weights, "--input", os.path.join(data, "val.csv"),
                         "--output", str(tmp_path), *opts]) == 0
    assert sorted(outputs(tmp_path)) == [f"val/{name}_000.npy" for name in ("down", "left", "right", "up")]
    assert [row["video"] for row in read_index(tmp_path)] == [f"val/{name}_000.mp4"
                                                              for name in ("down", "left", "right", "up")]


def test_weights_without_the_backbone_are_refused(demo, tmp_path):
    root, data, opts, cfg, weights, videos = demo
    partial = {k: v for k, v in torch.load(weights, weights_only=True)["model_state"].items()
               if not k.startswith("blocks.1.")}
    save_checkpoint(str(tmp_path / "partial.pyth"), {"model_state": partial})
    with pytest.raises(ValueError, match="lacks .* tensors the features need, e.g. blocks.1."):
        extract_main(["--cfg", DEMO_CFG, "--weights", str(tmp_path / "partial.pyth"), "--input",
                      os.path.join(data, "val"), "--output", str(tmp_path / "out"), *opts])
    with pytest.raises(ValueError, match="has stages 0..3"):
        extract_main(["--cfg", DEMO_CFG, "--weights", weights, "--input", os.path.join(data, "val"), "--output",
                      str(tmp_path / "out"), "--stage", "4", *opts])


@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
def test_shards_are_disjoint_and_complete(demo, tmp_path, monkeypatch, launcher):
    root, data, opts, cfg, weights, videos = demo
    out = tmp_path / "out"
    for rank in range(3):
        if launcher == "torchrun":
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "3")
        else:
            for name, value in (("SLURM_STEP_ID", "0"), ("SLURM_PROCID", rank), ("SLURM_STEP_NUM_TASKS", 3),
                                ("SLURM_JOB_ID", "123"), ("SLURM_STEP_NODELIST", "localhost")):
                monkeypatch.setenv(name, str(value))
        assert extract_main(["--cfg", DEMO_CFG, "--weights", weights, "--input", data, "--output", str(out),
                             *opts]) == 0
    shards = []
    for rank in range(3):
        with open(out / PARTS_FOLDER / f"rank-{rank:05d}.jsonl") as f:
            shards.append([json.loads(line)["video"] for line in f])
    assert [len(shard) for shard in shards] == [10, 9, 9]
    assert sorted(sum(shards, [])) == sorted(set(sum(shards, []))) == videos
    assert [row["video"] for row in read_index(out)] == videos


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_outputs(demo, tmp_path):
    root, data, opts, cfg, weights, videos = demo
    args = [sys.executable, TOOL, "--cfg", DEMO_CFG, "--weights", weights, "--input", data, "--window", "0.8",
            *opts]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = subprocess.run([*args, "--output", str(reference)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    process = subprocess.Popen([*args, "--output", str(resumed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(outputs(resumed)) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = outputs(resumed)  # every file present loads complete
    assert 5 <= len(finished) < len(videos), "the run was not stopped midway"
    rerun = subprocess.run([*args, "--output", str(resumed)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(videos)} videos: " in rerun.stdout and "already done" in rerun.stdout
    skipped = int(rerun.stdout.split(" extracted, ")[1].split(" already done")[0])
    assert skipped >= len(finished) - 1  # at most the video being written when killed is done again
    expected, got = outputs(reference), outputs(resumed)
    assert sorted(got) == sorted(expected) and len(got) == len(videos)
    for name in expected:  # bitwise equal on our machines; a BLAS may round a row differently in another batch
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert read_index(resumed) == read_index(reference)
    assert not [n for _, _, names in os.walk(resumed) for n in names if ".tmp-" in n]  # no temporaries left


@pytest.mark.slow
def test_torchrun_processes_share_the_videos(demo, tmp_path):
    root, data, opts, cfg, weights, videos = demo
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "out"
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "0", TOOL, "--cfg", DEMO_CFG,
                           "--weights", weights, "--input", data, "--output", str(out), *opts],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 0 of 2: 14 videos: 14 extracted" in done.stdout
    assert "process 1 of 2: 14 videos: 14 extracted" in done.stdout
    assert sorted(outputs(out)) == sorted(v[:-4] + ".npy" for v in videos)
    assert [row["video"] for row in read_index(out)] == videos


class RecordingExecutor:
    """submitit.AutoExecutor as far as tools/submit.py uses it, recording the job instead of submitting it."""

    made: list[RecordingExecutor] = []

    def __init__(self, folder, **kwargs) -> None:
        self.folder, self.kwargs, self.parameters, self.jobs = folder, kwargs, {}, []
        RecordingExecutor.made.append(self)

    def update_parameters(self, **parameters) -> None:
        self.parameters.update(parameters)

    def submit(self, job):
        self.jobs.append(job)
        return type("Job", (), {"job_id": "4242"})()


@pytest.fixture
def recording_executor(monkeypatch):
    RecordingExecutor.made = []
    monkeypatch.setattr(submit_cli.submitit, "AutoExecutor", RecordingExecutor)
    return RecordingExecutor


def test_submit_extract_features_submits_the_tool_on_every_task(demo, tmp_path, recording_executor, capsys):
    root, data, opts, cfg, weights, videos = demo
    inputs = [os.path.join(data, "val", name) for name in ("left_000.mp4", "up_000.mp4")]
    tool_args = ["--cfg", DEMO_CFG, "--weights", weights, "--input", *inputs, "--output", str(tmp_path / "out"),
                 "--window", "0.8", *opts]
    submit_cli.main(["--ngpus", "0", "--tasks-per-node", "2", "--partition", "debug", "--timeout", "30",
                     "--max-requeues", "3", "--job-dir", str(tmp_path / "job"), "extract-features", *tool_args])
    printed = capsys.readouterr().out
    assert "Submitted job 4242: 1 node(s) x 2 task(s), 0 GPU(s) per node" in printed
    assert f"Features, index.csv and failed.csv: {tmp_path / 'out'}" in printed
    [executor] = recording_executor.made
    assert executor.folder == str(tmp_path / "job" / "submitit" / "%j")
    assert executor.kwargs == {"slurm_max_num_timeout": 3}  # requeues after time limits
    assert {key: executor.parameters[key] for key in ("name", "nodes", "tasks_per_node", "timeout_min",
                                                      "slurm_partition")} == {
        "name": "features_HIERA_DEMO", "nodes": 1, "tasks_per_node": 2, "timeout_min": 30, "slurm_partition": "debug"}
    assert executor.parameters["slurm_additional_parameters"] == {"requeue": True}
    [job] = executor.jobs
    # What a time limit resubmits (submitit's Checkpointable): the same command, which skips the videos done.
    assert isinstance(job, submitit.helpers.Checkpointable) and isinstance(job, SlurmCommand)
    assert job.checkpoint().function is job and job.argv == tool_args
    # Every task runs what submitit unpickles: here the one task of a single process.
    assert cloudpickle.loads(cloudpickle.dumps(job))() == 0
    assert sorted(outputs(tmp_path / "out")) == ["left_000.npy", "up_000.npy"]
    assert [row["windows"] for row in read_index(tmp_path / "out")] == ["2", "2"]


@pytest.mark.parametrize("before, after, message", [
    ([], ["--stride", "1"], "[SLURM OPTIONS] extract-features: error: --stride needs --window"),  # named as given
    ([], ["--pool", "max"], "argument --pool: invalid choice: 'max'"),
    (["--cfg", DEMO_CFG], [], "--cfg and KEY VALUE overrides of a feature extraction go after extract-features"),
    ([], ["--weights", ""], "No weights to extract features with"),
])
def test_submit_extract_features_refuses_bad_arguments_before_submitting(demo, tmp_path, recording_executor, capsys,
                                                                         before, after, message):
    root, data, opts, cfg, weights, videos = demo
    with pytest.raises(SystemExit) as exited:
        submit_cli.main(["--ngpus", "0", *before, "extract-features", "--cfg", DEMO_CFG, "--weights", weights,
                         "--input", data, "--output", str(tmp_path / "out"), *opts, "OUTPUT_DIR", str(tmp_path / "run"),
                         *after])
    assert message in str(exited.value.code) + capsys.readouterr().err
    assert recording_executor.made == [] and not (tmp_path / "out").exists()
