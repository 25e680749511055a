"""tools/run_net.py as users start it: plain, under torchrun (2 CPU processes), and with impossible layouts."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.logging import read_json_stats

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")


@pytest.fixture(scope="module")
def opts(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("launch") / "motion")
    write_demo_dataset(data, num_classes=2, train_per_class=4, val_per_class=2, test_per_class=2, num_frames=16,
                       size=32)
    return ["DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "MODEL.NUM_CLASSES", "2", "HIERA.STAGES",
            "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE",
            "2", "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1.0", "DATA_LOADER.NUM_WORKERS", "0"]


def run_net(*args, launcher=(sys.executable,)):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    return subprocess.run([*launcher, os.path.join(REPO, "tools", "run_net.py"), "--cfg", DEMO, *args],
                          capture_output=True, text=True, timeout=600, env=env)


def test_torchrun_two_cpu_processes(opts, tmp_path):
    out = run_net(*opts, "OUTPUT_DIR", str(tmp_path),
                  launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"))
    assert out.returncode == 0, out.stderr[-3000:]
    stats = read_json_stats(str(tmp_path / "json_stats.log"))
    assert {s["world_size"] for s in stats if s.get("_type") == "train_epoch"} == {2}
    assert stats[-1]["split"] == "test_final" and stats[-1]["num_videos"] == 4


def test_gpus_requested_without_cuda_fail_before_work(opts, tmp_path):
    out = run_net(*opts, "OUTPUT_DIR", str(tmp_path), "NUM_GPUS", "2")
    assert out.returncode != 0
    assert "NUM_GPUS=2 but no CUDA device is visible: set NUM_GPUS 0" in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_indivisible_batch_names_the_fix(opts, tmp_path):
    out = run_net(*opts, "OUTPUT_DIR", str(tmp_path), "NUM_CPU_PROCS", "3")
    assert out.returncode != 0
    assert "TRAIN.BATCH_SIZE=4 is not divisible by 3 processes" in out.stderr


@pytest.mark.parametrize("rng_seed, demo_seed", [(0, 0), (1, 1), (2, 2)])
def test_the_demo_quick_start_reaches_90_percent(tmp_path, rng_seed, demo_seed):
    """The README's main command, as a user runs it (output and data folders moved into tmp), for training seeds
    and demo renderings other than the defaults too: the demo must not be a coin flip."""
    data = str(tmp_path / "motion")
    out = run_net("OUTPUT_DIR", str(tmp_path / "out"), "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data,
                  "RNG_SEED", str(rng_seed), "DATA.DEMO_SEED", str(demo_seed))
    assert out.returncode == 0, out.stderr[-3000:]
    final = read_json_stats(str(tmp_path / "out" / "json_stats.log"))[-1]
    assert final["split"] == "test_final" and final["num_videos"] == 40
    assert final["top1_acc"] >= 90.0, final


def test_a_demo_folder_of_another_seed_is_refused(tmp_path):
    data = str(tmp_path / "motion")
    write_demo_dataset(data, seed=1)
    out = run_net("OUTPUT_DIR", str(tmp_path / "out"), "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data)
    assert out.returncode != 0
    assert f"{data} holds a demo dataset made with other parameters" in out.stderr
