"""AVA detection: the ROI head's geometry, the detector's weights and gradients, the loss, and end-to-end runs
(train, validate, test) on tiny real AVA-format datasets whose mAP must equal tools/ava_eval.py's."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from ava_factory import SIT_ONLY, write_ava_dataset
from hiera_video.config import load_config
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.runner import run
from hiera_video.models.build import build_detector
from hiera_video.models.complexity import count_gmacs
from hiera_video.models.heads import HieraActionDetector, RoIActionHead
from hiera_video.models.registry import create_model, model_spec
from hiera_video.models.weights import load_pretrained
from hiera_video.tasks.detection import action_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(input_size=(4, 64, 64), embed_dim=16, num_heads=1, stages=(1, 1, 1), q_pool=2,
            mask_unit_attn=(True, False, False))


def make_detector(**kwargs):
    args = {**model_spec("hiera_base_16x224").defaults, **TINY, "num_classes": 80, **kwargs}
    return HieraActionDetector(**args)


# ----------------------------------------------------------------------------------------------- ROI head


def identity_head(dim, stride):
    head = RoIActionHead(dim, dim, spatial_stride=stride, resolution=4)
    with torch.no_grad():
        head.projection.weight.copy_(torch.eye(dim))
        head.projection.bias.zero_()
    return head


def test_roi_head_pools_the_boxed_region_at_the_stage_stride():
    # A 4x4 map (stride 16 on a 64 px input): channel 0 is hot in the top-left 2x2 cells, channel 1 in the
    # bottom-right cell. Boxes in pixels: the top-left 24 px, the bottom-right cell, and the top-right corner.
    features = torch.zeros(1, 2, 4, 4, 2)
    features[:, :, :2, :2, 0] = 1.0
    features[:, :, 3, 3, 1] = 3.0
    head = identity_head(2, stride=16)
    boxes = torch.tensor([[0.0, 0.0, 24.0, 24.0], [48.0, 48.0, 64.0, 64.0], [40.0, 0.0, 64.0, 20.0]])
    out = head(features, boxes, torch.zeros(3, dtype=torch.long))
    assert out.tolist() == [[1.0, 0.0], [0.0, 3.0], [0.0, 0.0]]
    # The same boxes on a stride-8 map of the same pixels (an 8x8 grid) find the same regions.
    fine = features.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert identity_head(2, stride=8)(fine, boxes, torch.zeros(3, dtype=torch.long)).tolist() == out.tolist()


def test_roi_head_averages_time_and_uses_each_boxs_own_sample():
    features = torch.zeros(2, 2, 4, 4, 1)
    features[0, 0] = 2.0  # sample 0: 2 then 0 -> mean 1
    features[1] = 5.0
    head = identity_head(1, stride=16)
    box = torch.tensor([[8.0, 8.0, 40.0, 40.0]] * 2)
    assert head(features, box, torch.tensor([1, 0])).flatten().tolist() == [5.0, 1.0]
    with pytest.raises(ValueError, match="box_batch_idx"):
        head(features, box, torch.tensor([0]))


# ----------------------------------------------------------------------------------------------- detector


def test_detector_reads_the_chosen_stage_with_that_stages_stride():
    last, middle = make_detector(), make_detector(head_stage=1)
    assert last.roi_head.spatial_scale == 1 / 16 and middle.roi_head.spatial_scale == 1 / 8
    assert len(last.blocks) == 3 and len(middle.blocks) == 2  # blocks after the head's stage are dropped
    assert middle.roi_head.projection.in_features == 32 and hasattr(middle, "feature_norm")
    with pytest.raises(ValueError, match="head_stage=3"):
        make_detector(head_stage=3)


@pytest.mark.parametrize("head_stage", [-1, 1])
def test_kinetics_weights_load_into_the_backbone_and_the_classifier_is_reported_unused(head_stage):
    kinetics = create_model("hiera_base_16x224", **TINY, num_classes=400)
    detector = make_detector(head_stage=head_stage)
    report = load_pretrained(detector, {"model_state": kinetics.state_dict()})
    assert {k.split(".")[0] for k in report.new_keys} == {"roi_head"} | ({"feature_norm"} if head_stage == 1 else set())
    assert "head.projection.weight" in report.unused_keys and not report.reinitialised
    x = torch.randn(2, 3, 4, 64, 64)
    _, expected = kinetics.forward_tokens(x, return_intermediates=True)
    _, got = detector.forward_tokens(x, return_intermediates=True)
    assert torch.equal(got[-1], expected[detector.head_stage])  # the same backbone features


@pytest.mark.parametrize("head_stage", [-1, 0])
def test_every_parameter_gets_a_gradient(head_stage):
    # DistributedDataParallel(find_unused_parameters=False) fails on parameters outside the graph.
    model = make_detector(head_stage=head_stage)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 50.0], [10.0, 10.0, 60.0, 60.0]])
    logits = model(torch.randn(2, 3, 4, 64, 64), boxes, torch.tensor([0, 1]))
    assert logits.shape == (2, 80)
    action_loss(logits, torch.zeros(2, 80)).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_without_boxes_each_clip_is_one_box_so_complexity_can_be_counted():
    model = make_detector().eval()
    x = torch.randn(2, 3, 4, 64, 64)
    whole = model(x, torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 2), torch.tensor([0, 1]))
    assert torch.equal(model(x), whole)
    assert count_gmacs(model, (1, 3, 4, 64, 64)) > 0


def test_build_detector_applies_the_config():
    cfg = load_config([], ["TASK", "detection", "HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "16",
                           "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "64", "MODEL.NUM_CLASSES", "80",
                           "MODEL.DROPOUT_RATE", "0.5", "AVA.ROI_RESOLUTION", "5", "AVA.HEAD_STAGE", "1"])
    model = build_detector(cfg)
    assert model.input_size == (4, 64, 64) and model.head_stage == 1 and model.roi_head.resolution == 5
    assert model.roi_head.dropout.p == 0.5 and model.roi_head.projection.out_features == 80


# ----------------------------------------------------------------------------------------------- loss


def test_loss_is_binary_cross_entropy_with_logits_and_amp_safe():
    logits = torch.tensor([[2.0, -1.0], [0.5, 8.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.sigmoid(logits.double())
    expected = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    assert action_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    huge = torch.tensor([[80.0, -80.0]], dtype=torch.bfloat16)  # sigmoid + BCE would take log(0) here
    assert action_loss(huge, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(80.0)
    empty = torch.zeros(0, 80, requires_grad=True)
    loss = action_loss(empty, torch.zeros(0, 80))
    loss.backward()
    assert loss.item() == 0.0 and loss.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- end to end


def detection_cfg(data_opts, output_dir, *opts):
    """A 3-stage, 16-channel Hiera on 4-frame 64x64 clips, trained with AdamW on the tiny AVA set."""
    base = ["TASK", "detection", "MODEL.ARCH", "hiera_base_16x224", "OUTPUT_DIR", str(output_dir),
            "HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
            "DATA.TRAIN_CROP_SIZE", "64", "DATA.TEST_CROP_SIZE", "64", "DATA.TRAIN_JITTER_SCALES_RELATIVE", "[]",
            "DATA.TRAIN_JITTER_SCALES", "[64, 80]", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4",
            "SOLVER.BASE_LR", "1e-2", "SOLVER.BASE_LR_BATCH", "4", "SOLVER.WARMUP_EPOCHS", "1.0",
            "SOLVER.WEIGHT_DECAY", "0.0", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1",
            "TRAIN.EVAL_PERIOD", "100", "TRAIN.CHECKPOINT_PERIOD", "100", "TENSORBOARD.ENABLE", "False"]
    return load_config([], base + list(data_opts) + list(opts))


def ava_eval_cli(cfg, detections, output, labelmap=None, exclusions=None):
    annotation = lambda name: os.path.join(cfg.AVA.ANNOTATION_DIR, name)  # noqa: E731
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "ava_eval.py"), "-g",
                    annotation(cfg.AVA.GROUNDTRUTH_FILE), "-d", detections, "-l",
                    annotation(labelmap or cfg.AVA.LABEL_MAP_FILE), "-e",
                    exclusions or annotation(cfg.AVA.EXCLUSION_FILE), "-o", output], check=True, capture_output=True)
    with open(output) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["frames", "videos"])
def test_training_then_test_writes_detections_scored_like_the_official_cli(tmp_path, single_process, layout):
    data = write_ava_dataset(str(tmp_path / "ava"), layout)
    # The video layout decodes in a worker process: the dataset and its collate must travel there.
    workers = "1" if layout == "videos" else "0"
    cfg = detection_cfg(data, tmp_path / "out", "SOLVER.MAX_EPOCH", "20", "DATA_LOADER.NUM_WORKERS", workers)
    results = run(single_process, cfg)

    out = tmp_path / "out"
    with open(out / "detections.csv") as f:
        rows = list(csv.reader(f))
    # 2 validation videos x 3 keyframes x 2 confident boxes (the 0.3 box is filtered) x 2 label-map classes.
    assert len(rows) == 24 and {r[6] for r in rows} == {"1", "3"} and all(len(r) == 8 for r in rows)
    assert {(r[0], r[1]) for r in rows} == {(f"val_{v}", f"{s:04d}") for v in range(2) for s in (902, 903, 904)}
    official = ava_eval_cli(cfg, str(out / "detections.csv"), str(tmp_path / "cli.json"))
    assert results["map"] == official["mAP"] and results["num_boxes"] == 12 and results["bad_videos"] == 0
    with open(out / "ava_result.json") as f:
        assert json.load(f) == official

    stats = read_json_stats(str(out / "json_stats.log"))
    val = [s for s in stats if s.get("_type") == "val_epoch"]
    assert len(val) == 1 and val[0]["num_keyframes"] == 2 and 0.0 <= val[0]["map"] <= 1.0  # second 904 only
    assert len([s for s in stats if s.get("_type") == "train_iter"]) == 3 * 20
    assert results["map"] >= 0.9  # the person's colour gives the action: a trained detector gets it right


@pytest.mark.slow
def test_a_class_subset_on_a_custom_keyframe_range_trains_and_is_scored_over_its_classes(tmp_path, single_process):
    """One training step, a validation and the test of a custom AVA-format dataset: keyframes at seconds 1-3 of
    uncut videos (AVA.FIRST_SECOND 0), AVA.KEYFRAME_RANGE [1, 2], and the one-class subset "sit" (id 3) of its
    label map as AVA.CLASS_SUBSET with MODEL.NUM_CLASSES 1."""
    data = write_ava_dataset(str(tmp_path / "ava"), "videos", num_train=2, num_val=2, seconds=(1, 2, 3),
                             first_second=0)
    out = tmp_path / "out"
    cfg = detection_cfg(data, out, "MODEL.NUM_CLASSES", "1", "AVA.CLASS_SUBSET", SIT_ONLY, "AVA.KEYFRAME_RANGE",
                        "[1, 2]", "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0.0", "TRAIN.EVAL_PERIOD", "1",
                        "AVA.FULL_TEST_ON_VAL", "True")
    results = run(single_process, cfg)

    stats = read_json_stats(str(out / "json_stats.log"))
    (step,) = [s for s in stats if s.get("_type") == "train_iter"]  # 2 videos x 2 keyframes = one batch of 4
    assert 0 < step["loss"] < 10
    (val,) = [s for s in stats if s.get("_type") == "val_epoch"]
    assert val["num_keyframes"] == 4 and val["bad_videos"] == 0 and 0.0 <= val["map"] <= 1.0
    with open(out / "detections.csv") as f:
        rows = list(csv.reader(f))
    # 2 videos x 2 keyframes in the range x 2 confident boxes x the one class, written with its original id.
    assert len(rows) == 8 and {r[6] for r in rows} == {"3"} and {r[1] for r in rows} == {"0001", "0002"}
    with open(out / "ava_result.json") as f:
        assert list(json.load(f)["per_class"]) == ["3"]
    # tools/ava_eval.py gives the same mAP with the subset's label map and the keyframes outside the range excluded.
    exclusions = tmp_path / "exclusions.csv"
    exclusions.write_text("val_1,0002\nval_0,0003\nval_1,0003\n")  # the dataset's own exclusion, then the range
    official = ava_eval_cli(cfg, str(out / "detections.csv"), str(tmp_path / "cli.json"), labelmap=SIT_ONLY,
                            exclusions=str(exclusions))
    assert results["map"] == official["mAP"] and results["num_keyframes"] == 4
    log = (out / "stdout.log").read_text()
    ground_truth = os.path.join(cfg.AVA.ANNOTATION_DIR, "ava_val_v2.2.csv")
    assert log.count(f"{ground_truth}: 2 keyframes outside AVA.KEYFRAME_RANGE [1, 2] are not scored") == 1
    assert "ava_train_v2.2.csv: rows outside AVA.KEYFRAME_RANGE [1, 2] are left out: 4 rows" in log
    assert f"ava_train_v2.2.csv: actions outside AVA.CLASS_SUBSET {os.path.join(cfg.AVA.ANNOTATION_DIR, SIT_ONLY)}" \
           in log


@pytest.mark.slow
def test_testing_a_checkpoint_gives_the_same_detections_with_two_processes(tmp_path):
    from hiera_video.engine.runner import launch

    data = write_ava_dataset(str(tmp_path / "ava"), "videos", num_train=1, num_val=3)
    weights = str(tmp_path / "weights.pyth")
    torch.save({"model_state": build_detector(detection_cfg(data, tmp_path)).state_dict()}, weights)
    opts = ["TRAIN.ENABLE", "False", "TEST.BATCH_SIZE", "2", "TEST.CHECKPOINT_FILE_PATH", weights]
    one = launch(detection_cfg(data, tmp_path / "one", *opts))
    two = launch(detection_cfg(data, tmp_path / "two", *opts, "NUM_CPU_PROCS", "2"))
    assert one["map"] == two["map"] and one["num_boxes"] == two["num_boxes"] == 18
    assert (tmp_path / "one" / "detections.csv").read_text() == (tmp_path / "two" / "detections.csv").read_text()


@pytest.mark.slow
def test_visualize_ava_draws_boxes_on_keyframes(tmp_path):
    from PIL import Image

    data = write_ava_dataset(str(tmp_path / "ava"), "frames", num_train=1, num_val=1)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text("TASK: detection\n")
    detections = tmp_path / "det.csv"
    detections.write_text("val_0,0903,0.100,0.100,0.400,0.900,1,0.9000\nval_0,0903,0.100,0.100,0.400,0.900,3,0.2000\n")
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "visualize_ava.py"), "--cfg", str(cfg_path),
                    "--detections", str(detections), "--groundtruth", "--output-dir", str(tmp_path / "png"),
                    *data, "OUTPUT_DIR", str(tmp_path)], check=True, capture_output=True)
    image = Image.open(tmp_path / "png" / "val_0_0903.png").convert("RGB")
    assert image.height == 360 and image.width == 540  # 64x96 enlarged to a readable size
    orange = sum(1 for pixel in image.getdata() if pixel == (255, 140, 0))
    green = sum(1 for pixel in image.getdata() if pixel == (40, 220, 40))
    assert orange > 2 * (0.3 * 540 + 0.8 * 360) and green > 0  # the detection's outline (and its labels)


def test_bad_boxes_and_missing_frames_are_skipped_and_counted_in_the_stats(tmp_path, single_process):
    """Training and evaluation run through box lists with bad boxes (each reported by file:line in the log) and
    frame folders with missing frames; every keyframe that cannot be read is counted in json_stats' bad_videos."""
    root = tmp_path / "ava"
    data = write_ava_dataset(str(root), "frames", num_train=2, num_val=2)
    annotations = root / "annotations"
    train_gt = annotations / "ava_train_v2.2.csv"
    num_lines = len(train_gt.read_text().splitlines())
    with open(train_gt, "a") as f:
        f.write("train_0,0902,0.500,0.100,0.200,0.900,1,7\ntrain_1,0903,0.100,0.100,1.400,0.900,3,8\n")
    with open(annotations / "ava_val_predicted_boxes.csv", "a") as f:
        f.write("val_0,0904,0.200,0.900,0.400,0.100,,0.990\n")
    # Clips are 4 frames 2 apart around frame (second - 901) * 30.
    os.remove(root / "frames" / "train_0" / "train_0_000059.jpg")  # frame 58: train_0 at 903 s
    os.remove(root / "frames" / "val_0" / "val_0_000031.jpg")  # frame 30: val_0 at 902 s
    os.remove(root / "frames" / "val_0" / "val_0_000061.jpg")  # frame 60: val_0 at 903 s
    val_list = root / "frame_lists" / "val.csv"
    val_list.write_text("".join(line for line in val_list.read_text().splitlines(keepends=True)
                                if not line.startswith("val_1 1 90 ")))  # a gap: val_1 at 904 s
    out = tmp_path / "out"
    cfg = detection_cfg(data, out, "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0.0", "TRAIN.BATCH_SIZE", "2",
                        "TRAIN.EVAL_PERIOD", "1", "DATA.MAX_BAD_FRACTION", "0.5")
    results = run(single_process, cfg)

    stats = read_json_stats(str(out / "json_stats.log"))
    (train_epoch,) = [s for s in stats if s.get("_type") == "train_epoch"]
    (val_epoch,) = [s for s in stats if s.get("_type") == "val_epoch"]
    (test_final,) = [s for s in stats if s.get("split") == "test_final"]
    assert train_epoch["bad_videos"] == 1  # train_0 at 903 s, replaced by another keyframe
    assert val_epoch["bad_videos"] == 1 and val_epoch["num_keyframes"] == 2  # second 904 only: val_1's gap
    assert test_final["bad_videos"] == 3 and test_final["num_keyframes"] == 6 and results["bad_videos"] == 3
    with open(out / "detections.csv") as f:
        scored = {(row[0], row[1]) for row in csv.reader(f)}
    assert ("val_0", "0902") not in scored and ("val_1", "0904") not in scored and len(scored) == 3
    assert results["map"] == ava_eval_cli(cfg, str(out / "detections.csv"), str(tmp_path / "cli.json"))["mAP"]
    log = (out / "stdout.log").read_text()
    assert f"{train_gt}:{num_lines + 1} (x1,y1,x2,y2 = 0.500,0.100,0.200,0.900)" in log
    assert f"{train_gt}:{num_lines + 2} (x1,y1,x2,y2 = 0.100,0.100,1.400,0.900)" in log
    assert f"{annotations / 'ava_val_predicted_boxes.csv'}:" in log and "val_1 (1 of frames 0..119)" in log
    # One warning per video, however many of its keyframes failed.
    test_warnings = [line for line in log.splitlines() if "AVA test:" in line and "failed to decode" in line]
    assert len(test_warnings) == 2
    assert "2 keyframes of val_0 failed" in log and "; 1 more like it" in log
