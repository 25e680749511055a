"""hiera_video.cli: the documented commands start from a clone and as installed commands; MAE visualisation, log
plots, model info, and submit.py's checks before anything reaches Slurm."""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from hiera_video.config import load_config
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.checkpoint import save_checkpoint
from hiera_video.engine.logging import log_json_stats
from hiera_video.models.build import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAE_DEMO = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO_MAE.yaml")
with open(os.path.join(REPO, "README.md")) as _readme:
    DOCUMENTED_SCRIPTS = sorted(set(re.findall(r"python ((?:tools|benchmarks)/\w+\.py)", _readme.read())))
CONSOLE_SCRIPTS = {"hiera-run": "run_net", "hiera-submit": "submit", "hiera-ava-eval": "ava_eval",
                   "hiera-model-info": "model_info", "hiera-plot-logs": "plot_logs",
                   "hiera-visualize-ava": "visualize_ava", "hiera-visualize-mae": "visualize_mae",
                   "hiera-analyze-predictions": "analyze_predictions",
                   "hiera-predict": "predict", "hiera-extract-features": "extract_features",
                   "hiera-consolidate-checkpoint": "consolidate_checkpoint"}


def run_tool(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_the_readme_names_scripts_that_exist():
    assert "tools/run_net.py" in DOCUMENTED_SCRIPTS
    assert [path for path in DOCUMENTED_SCRIPTS if not os.path.isfile(os.path.join(REPO, path))] == []


@pytest.mark.slow
@pytest.mark.parametrize("script", DOCUMENTED_SCRIPTS)
def test_every_documented_script_starts_from_any_folder(script, tmp_path):
    """Run as the README shows, from another folder: the installed package is found without a sys.path edit."""
    out = run_tool(os.path.join(REPO, script), "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_console_scripts_point_at_the_tools_main_functions():
    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")
                    if ep.value.startswith("hiera_video.")}
    for name, module in CONSOLE_SCRIPTS.items():
        assert entry_points[name].value == f"hiera_video.cli.{module}:main"
        assert entry_points[name].load() is importlib.import_module(f"hiera_video.cli.{module}").main
    assert entry_points["hiera-prepare-data"].value == "hiera_video.data.preparation.cli:main"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONSOLE_SCRIPTS))
def test_console_scripts_start(name, tmp_path):
    command = shutil.which(name)
    assert command, f"{name} is not on PATH: pip install -e . installs it"
    out = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("usage:"), out.stderr


@pytest.fixture(scope="module")
def mae_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    data = str(root / "motion")
    write_demo_dataset(data, num_classes=2, train_per_class=1, val_per_class=2, test_per_class=1, num_frames=40,
                       size=64)
    opts = ["DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "MODEL.NUM_CLASSES", "2", "DATA.DEMO_PATTERN",
            "texture", "DATA.DEMO_NOISE", "0.0"]
    cfg = load_config(MAE_DEMO, opts)
    checkpoint = str(root / "mae.pyth")
    save_checkpoint(checkpoint, {"model_state": build_model(cfg).state_dict()})
    return root, opts, checkpoint, cfg


def test_reconstruction_of_a_perfect_prediction_is_the_input(mae_setup, monkeypatch):
    _, _, _, cfg = mae_setup
    model = build_model(cfg).eval()
    video = torch.randn(2, 3, *model.input_size)
    mask = model.random_mask(2, 0.5)  # of the demo's 4 units, one per time slice
    original = model.forward_decoder

    def perfect(latent, mask):
        pred, visible = original(latent, mask)
        return model.targets(video), visible

    monkeypatch.setattr(model, "forward_decoder", perfect)
    frames, masked, reconstruction = model.reconstruct(video, mask)
    assert frames.shape == (2, cfg.DATA.NUM_FRAMES // 2, 3, 64, 64)
    assert torch.allclose(reconstruction, frames, atol=1e-3)
    hidden = (masked == 0).all(dim=2)  # blanked pixels, all channels
    assert hidden.float().mean() == 0.5  # half the units hidden


@pytest.mark.slow
def test_visualize_mae_writes_one_png_per_clip(mae_setup, tmp_path):
    _, opts, checkpoint, cfg = mae_setup
    out = run_tool("tools/visualize_mae.py", "--cfg", MAE_DEMO, "--checkpoint", checkpoint, "--num-clips", "2",
                   "--out", str(tmp_path / "vis"), *opts)
    assert out.returncode == 0, out.stderr
    pngs = sorted(os.listdir(tmp_path / "vis"))
    assert pngs == ["clip_000.png", "clip_001.png"]
    width, height = Image.open(tmp_path / "vis" / pngs[0]).size
    frames = cfg.DATA.NUM_FRAMES // 2
    assert (width, height) == (frames * (64 + 2) + 2, 3 * (64 + 2) + 2)  # frames x (input, masked, reconstruction)


@pytest.mark.slow
def test_plot_logs_draws_the_logged_metrics(tmp_path):
    run_dir = tmp_path / "run"
    for epoch in (1, 2):
        for it in (1, 2):
            log_json_stats({"_type": "train_iter", "epoch": f"{epoch}/2", "iter": f"{it}/2", "loss": 1.0 / (epoch + it),
                            "lr": 0.1}, str(run_dir))
        log_json_stats({"_type": "val_epoch", "epoch": f"{epoch}/2", "top1_err": 50.0 / epoch}, str(run_dir))
    out = run_tool("tools/plot_logs.py", str(run_dir / "json_stats.log"), "--out", str(tmp_path / "c.png"))
    assert out.returncode == 0, out.stderr
    assert "train loss" in out.stdout and "val top-1 error" in out.stdout
    assert Image.open(tmp_path / "c.png").size[0] > 0


@pytest.mark.parametrize("args, message", [
    (["--ngpus", "0", "--tasks-per-node", "3"], "TRAIN.BATCH_SIZE=16 is not divisible by 3 processes"),
    (["--ngpus", "0", "NUM_GPUS", "8"], "pass --ngpus 8, or add NUM_GPUS 0"),
])
@pytest.mark.slow
def test_submit_refuses_layouts_that_cannot_run(args, message, tmp_path):
    out = run_tool("tools/submit.py", "--cfg", os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml"),
                   "--job-dir", str(tmp_path / "job"), *args)
    assert out.returncode != 0
    assert "Not submitted" in out.stderr and message in out.stderr
    assert not (tmp_path / "job" / "submitit").exists()


@pytest.mark.slow
def test_model_info_prints_parameters_gmacs_and_speed():
    out = run_tool("tools/model_info.py", "--model", "hiera_base_16x224", "--frames", "4", "--size", "64",
                   "--warmup", "0", "--iters", "1")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
    # 51,092,560 minus the position embeddings of the 3136 - 256 spatial and 8 - 2 temporal tokens dropped
    assert lines["parameters"] == f"50.82M ({51_092_560 - (3136 - 256 + 8 - 2) * 96:,})"
    assert float(lines["GMACs"].split()[0]) > 0 and "clips/s" in lines["speed"]
