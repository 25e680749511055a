"""Official weights by name (MODEL:CHECKPOINT): the release table, download-once into the torch hub cache, atomic
and verified downloads, offline instructions, and the name in create_model and the engine's checkpoint keys.

Every download comes from a server on 127.0.0.1 (tests/weights_server.py) into a temporary $TORCH_HOME.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.checkpoint import find_latest_checkpoint, load_checkpoint
from hiera_video.engine.runner import load_test_weights, run
from hiera_video.models import create_model, hiera_base_16x224, list_models, load_state_file, resolve_weights
from hiera_video.models.pretrained import (
    BASE_URL_ENV,
    OFFICIAL_WEIGHTS,
    default_checkpoint,
    official_weights,
    parse_weights_name,
    weights_url,
)
from hiera_video.tasks import build_task
from hiera_video.utils.distributed import DistContext
from hiera_video.utils.download import DownloadError
from weights_server import WeightsServer, checkpoint_bytes, use_temporary_hub

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")
TINY = dict(input_size=(4, 32, 32), embed_dim=8, num_heads=1, stages=(1, 1, 1), q_pool=2,
            mask_unit_attn=(True, True, False), num_classes=3)
TINY_MAE = {**{k: v for k, v in TINY.items() if k != "num_classes"}, "decoder_embed_dim": 16, "decoder_depth": 1,
            "decoder_num_heads": 1}
NAME = "hiera_base_16x224:mae_k400_ft_k400"
FILE = "hiera_base_16x224.pth"


@pytest.fixture(scope="module")
def served_models():
    torch.manual_seed(7)
    return {FILE: create_model("hiera_base_16x224", **TINY),
            "mae_hiera_base_16x224.pth": create_model("mae_hiera_base_16x224", **TINY_MAE)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The checkpoint folder of a temporary torch hub cache."""
    return use_temporary_hub(monkeypatch, tmp_path / "torch_home")


@pytest.fixture
def server(served_models, monkeypatch):
    server = WeightsServer({name: checkpoint_bytes(model) for name, model in served_models.items()})
    monkeypatch.setenv(BASE_URL_ENV, server.url)
    yield server
    server.close()


def cache_listing(folder) -> list[str]:
    """Every file in the cache folder except the download locks."""
    return sorted(name for name in os.listdir(folder) if not name.endswith(".lock")) if os.path.isdir(folder) else []


def assert_same_weights(model, source):
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_table_is_the_official_release():
    hiera = pytest.importorskip("hiera")  # the official package (test extra), read for its checkpoint lists
    assert sorted(OFFICIAL_WEIGHTS) == list_models()  # every model we build has its official weights named
    for model, checkpoints in OFFICIAL_WEIGHTS.items():
        official = getattr(hiera, model)
        assert default_checkpoint(model) == official.default, model
        assert {name: weights_url(model, name) for name in checkpoints} == official.checkpoints, model


def test_shipped_configs_name_official_weights_of_their_model():
    named = 0
    for path in glob.glob(os.path.join(REPO, "configs", "*", "[!_]*.yaml")):
        cfg = load_config(path)
        for spec in (cfg.TRAIN.CHECKPOINT_FILE_PATH, cfg.TEST.CHECKPOINT_FILE_PATH):
            name = parse_weights_name(spec)
            if name:
                official_weights(*name)  # a known model and checkpoint
                assert name[0].removeprefix("mae_") == cfg.MODEL.ARCH.removeprefix("mae_"), path
                named += 1
    assert named == 10  # Kinetics-400 (B, B+, L, H) and SSv2 (B, B+, L) from MAE, AVA (B, L, H) from fine-tuned


def test_a_name_downloads_once_into_the_hub_cache_then_reads_the_cache(cache, server, capfd):
    path = resolve_weights(NAME)
    assert path == os.path.join(cache, FILE)
    with open(path, "rb") as f:
        assert f.read() == server.files[FILE]
    assert "100%" in capfd.readouterr().err  # the progress bar

    assert resolve_weights(NAME) == path
    assert load_state_file(NAME)["model_state"].keys()
    assert server.requests == {FILE: 1}
    assert cache_listing(cache) == [FILE]


def test_create_model_pretrained_by_checkpoint_name_or_true(cache, server, served_models):
    by_name = create_model("hiera_base_16x224", pretrained="mae_k400_ft_k400", **TINY)
    assert_same_weights(by_name, served_models[FILE])
    assert_same_weights(hiera_base_16x224(pretrained=True, **TINY), served_models[FILE])  # the default checkpoint
    assert server.requests == {FILE: 1}

    mae = served_models["mae_hiera_base_16x224.pth"]
    encoder = create_model("hiera_base_16x224", pretrained="mae_k400", **TINY)  # MAE weights -> the encoder
    assert torch.equal(encoder.blocks[1].attn.qkv.weight, mae.blocks[1].attn.qkv.weight)
    assert_same_weights(create_model("mae_hiera_base_16x224", pretrained=True, **TINY_MAE), mae)

    checkpoints = "hiera_base_16x224:mae_k400_ft_k400 \\(default\\), hiera_base_16x224:mae_k400"
    with pytest.raises(ValueError, match=f"no official checkpoint 'mae_in1k'; its checkpoints: {checkpoints}"):
        create_model("hiera_base_16x224", pretrained="mae_in1k", **TINY)


def test_unknown_names_list_the_valid_ones_without_downloading(cache, server):
    with pytest.raises(ValueError, match="no official checkpoint 'mae_k600'.*hiera_base_16x224:mae_k400_ft_k400"):
        resolve_weights("hiera_base_16x224:mae_k600")
    with pytest.raises(ValueError, match="no official weights for model 'hiera_bse_16x224'.*hiera_base_16x224"):
        resolve_weights("hiera_bse_16x224:mae_k400")
    with pytest.raises(FileNotFoundError, match="official weights of that model are named "
                                                "hiera_base_16x224:mae_k400_ft_k400"):
        resolve_weights("hiera_base_16x224")
    with pytest.raises(FileNotFoundError, match="weights file not found: missing/hiera.pth"):
        resolve_weights("missing/hiera.pth")
    assert not server.requests


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"  # nothing listens once the socket is closed


def test_offline_error_says_what_to_download_and_where_a_local_path_still_works(cache, monkeypatch, tmp_path,
                                                                             served_models):
    monkeypatch.setenv(BASE_URL_ENV, closed_port_url())
    with pytest.raises(DownloadError) as error:
        resolve_weights(NAME)
    message = str(error.value)
    assert "Connection refused" in message
    assert "download https://dl.fbaipublicfiles.com/hiera/hiera_base_16x224.pth on a machine with internet" in message
    assert f"copy the file to {os.path.join(cache, FILE)}" in message
    assert "a local path always works" in message and BASE_URL_ENV in message
    assert cache_listing(cache) == []

    local = tmp_path / "downloaded_elsewhere.pth"
    local.write_bytes(checkpoint_bytes(served_models[FILE]))
    model = create_model("hiera_base_16x224", pretrained=str(local), **TINY)
    assert_same_weights(model, served_models[FILE])
    monkeypatch.chdir(tmp_path)
    os.rename(local, tmp_path / NAME)  # a file of the name's exact spelling wins over the download
    assert resolve_weights(NAME) == NAME


def test_http_error_names_the_status(cache, server):
    del server.files[FILE]
    with pytest.raises(DownloadError, match="HTTP Error 404"):
        resolve_weights(NAME)
    assert cache_listing(cache) == []


def test_wrong_sha256_fails_and_keeps_nothing_then_the_right_one_passes(cache, server, monkeypatch):
    checkpoints = OFFICIAL_WEIGHTS["hiera_base_16x224"]
    entry = checkpoints["mae_k400_ft_k400"]
    monkeypatch.setitem(checkpoints, "mae_k400_ft_k400", dataclasses.replace(entry, sha256="ab" * 32))
    with pytest.raises(DownloadError, match="SHA-256 .* expected abab"):
        resolve_weights(NAME)
    assert cache_listing(cache) == []

    digest = hashlib.sha256(server.files[FILE]).hexdigest()
    monkeypatch.setitem(checkpoints, "mae_k400_ft_k400", dataclasses.replace(entry, sha256=digest.upper()))
    assert os.path.getsize(resolve_weights(NAME)) == len(server.files[FILE])
    assert cache_listing(cache) == [FILE]


def test_a_body_cut_short_is_not_cached(cache, server):
    # No hash is published for the official files: the announced length is what catches a truncated download.
    server.cut_after = len(server.files[FILE]) // 2
    with pytest.raises(DownloadError, match=f"ended after {server.cut_after} of {len(server.files[FILE])} bytes"):
        resolve_weights(NAME)
    assert cache_listing(cache) == []
    server.cut_after = None
    assert os.path.getsize(resolve_weights(NAME)) == len(server.files[FILE])


def test_concurrent_resolvers_share_one_download(cache, server):
    server.files[FILE] = os.urandom(8 * 64 * 1024)
    server.chunk_delay = 0.05
    paths: list[str] = []
    threads = [threading.Thread(target=lambda: paths.append(resolve_weights(NAME, progress=False)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert paths == [os.path.join(cache, FILE)] * 3
    assert server.requests == {FILE: 1}


@pytest.mark.slow
def test_a_killed_download_leaves_no_file_under_the_final_name(cache, server, tmp_path):
    large = "hiera_large_16x224.pth"
    server.files[large] = os.urandom(4 * 1024 * 1024)
    server.chunk_delay = 0.05  # 64 chunks: over 3 s
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home"), BASE_URL_ENV: server.url, "PYTHONPATH": REPO}
    code = "from hiera_video.models import resolve_weights; resolve_weights('hiera_large_16x224:mae_k400_ft_k400')"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    temporaries = os.path.join(glob.escape(cache), f".{large}.tmp-*")
    deadline = time.monotonic() + 120
    while not any(os.path.getsize(p) > 0 for p in glob.glob(temporaries)):
        assert child.poll() is None and time.monotonic() < deadline, "the download did not start"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not os.path.exists(os.path.join(cache, large))
    assert len(glob.glob(temporaries)) == 1  # the killed process's partial file, under a hidden name

    server.chunk_delay = 0.0
    path = resolve_weights("hiera_large_16x224:mae_k400_ft_k400", progress=False)
    with open(path, "rb") as f:
        assert f.read() == server.files[large]
    assert not glob.glob(temporaries)  # the next download removed it
    assert server.requests[large] == 2


def demo_cfg(tmp_path, *opts):
    """The demo config on a tiny 2-class dataset, with a 3-stage, 8-channel Hiera."""
    data = str(tmp_path / "data")
    if not os.path.isdir(data):
        write_demo_dataset(data, num_classes=2, train_per_class=2, val_per_class=1, test_per_class=1,
                           num_frames=8, size=32)
    return load_config(DEMO_CFG, [
        "OUTPUT_DIR", str(tmp_path / "run"), "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data,
        "MODEL.NUM_CLASSES", "2", "HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "8", "DATA.NUM_FRAMES", "4",
        "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32",
        "DATA_LOADER.NUM_WORKERS", "0", *opts])


def serve_model_of(cfg, server):
    """Serves a model of `cfg`'s architecture (other random weights than a fresh one) as the official file."""
    ctx = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"),
                      backend=None, launcher="single")
    torch.manual_seed(123)
    model = build_task(cfg, ctx).build_model()
    server.files[FILE] = checkpoint_bytes(model)
    return model, ctx


def test_test_checkpoint_file_path_takes_a_name(cache, server, tmp_path):
    cfg = demo_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", NAME)
    served, ctx = serve_model_of(cfg, server)
    model = build_task(cfg, ctx).build_model()
    assert load_test_weights(cfg, model, is_main=True) == NAME
    assert_same_weights(model, served)


def test_training_starts_from_train_checkpoint_file_path_by_name(cache, server, tmp_path, single_process):
    cfg = demo_cfg(tmp_path, "TRAIN.CHECKPOINT_FILE_PATH", NAME, "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "0",
                   "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0.0", "TRAIN.BATCH_SIZE", "2",
                   "SOLVER.BASE_LR", "0.0",
                   "SOLVER.WARMUP_START_LR", "0.0", "SOLVER.COSINE_END_LR", "0.0", "SOLVER.WEIGHT_DECAY", "0.0")
    served, _ = serve_model_of(cfg, server)
    run(single_process, cfg)
    trained = load_checkpoint(find_latest_checkpoint(cfg.OUTPUT_DIR))["model_state"]
    for key, value in served.state_dict().items():
        assert torch.equal(trained[key], value), key  # learning rate 0: exactly the downloaded weights
    assert server.requests == {FILE: 1}
