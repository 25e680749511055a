"""Per-class analysis functions on hand-checked inputs, and the test_scores.npz file format."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hiera_video.evaluation.classification import topk_correct
from hiera_video.evaluation.per_class import (
    class_accuracy,
    confusion_matrix,
    confusions,
    most_confused_classes,
    top1_predictions,
    twin_confusions,
)
from hiera_video.evaluation.score_file import VideoScores, load_test_scores, save_test_scores

# 6 videos, 4 classes. Class 0: 2 videos (1 right), class 1: 3 videos (1 right, 2 taken for class 0), class 2: none,
# class 3: 1 video (right); the last video has no label.
SCORES = np.array([
    [0.7, 0.1, 0.1, 0.1],  # label 0 -> 0
    [0.1, 0.2, 0.6, 0.1],  # label 0 -> 2 (0 is 3rd)
    [0.5, 0.4, 0.0, 0.1],  # label 1 -> 0 (1 is 2nd)
    [0.6, 0.1, 0.2, 0.1],  # label 1 -> 0 (1 ties with 3 for 3rd)
    [0.1, 0.8, 0.0, 0.1],  # label 1 -> 1
    [0.0, 0.1, 0.1, 0.8],  # label 3 -> 3
    [0.9, 0.0, 0.0, 0.1],  # unlabelled
], dtype=np.float32)
LABELS = np.array([0, 0, 1, 1, 1, 3, -1])


def test_class_accuracy_counts_each_class_and_weighs_classes_equally():
    accuracy = class_accuracy(SCORES, LABELS, ks=(1, 2))
    assert accuracy.support.tolist() == [2, 3, 0, 1]
    assert accuracy.correct[1].tolist() == [1, 1, 0, 1]
    assert accuracy.correct[2].tolist() == [1, 2, 0, 1]
    np.testing.assert_allclose(accuracy.accuracy(1), [50.0, 100.0 / 3, np.nan, 100.0])
    assert accuracy.mean_accuracy(1) == pytest.approx((50.0 + 100.0 / 3 + 100.0) / 3)  # class 2 has no video
    overall = topk_correct(torch.tensor(SCORES[:-1]), torch.tensor(LABELS[:-1]), ks=(1, 2))
    assert [int(accuracy.correct[k].sum()) for k in (1, 2)] == overall


def test_ties_are_broken_as_the_overall_top_k_breaks_them():
    tied = np.full((50, 3), 1 / 3, dtype=np.float32)
    labels = np.arange(50) % 3
    accuracy = class_accuracy(tied, labels, ks=(1,))
    assert int(accuracy.correct[1].sum()) == topk_correct(torch.tensor(tied), torch.tensor(labels), ks=(1,))[0]
    hits = top1_predictions(tied) == labels
    assert np.bincount(labels[hits], minlength=3).tolist() == accuracy.correct[1].tolist()


def test_no_labelled_video_has_no_mean_class_accuracy():
    with pytest.raises(ValueError, match="No class has a labelled video"):
        class_accuracy(SCORES[-1:], LABELS[-1:]).mean_accuracy(1)


def test_confusion_matrix_and_most_frequent_confusions():
    predicted = top1_predictions(SCORES)
    assert predicted.tolist() == [0, 2, 0, 0, 1, 3, 0]
    matrix = confusion_matrix(LABELS, predicted, 4)
    assert matrix.tolist() == [[1, 0, 1, 0], [2, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]  # the unlabelled video is out
    assert confusions(matrix) == [(1, 0, 2), (0, 2, 1)]
    assert confusions(np.diag([3, 4])) == []


def test_most_confused_classes_rank_errors_both_ways_and_keep_class_order():
    matrix = np.array([[5, 0, 0, 0, 1],
                       [0, 5, 0, 0, 0],
                       [3, 0, 5, 0, 0],
                       [0, 0, 0, 5, 0],
                       [0, 0, 0, 2, 5]])
    # Errors per class (out of its row + into its column): 0: 1 + 3, 1: 0, 2: 3, 3: 2, 4: 2 + 1.
    assert most_confused_classes(matrix, 2).tolist() == [0, 2]  # 4 and 3 errors; 4 ties with 2 later
    assert most_confused_classes(matrix, 3).tolist() == [0, 2, 4]
    assert most_confused_classes(matrix, 5).tolist() == most_confused_classes(matrix, 9).tolist() == [0, 1, 2, 3, 4]


def test_twin_confusions_give_each_mirrored_pair_once():
    matrix = np.array([[4, 3, 0], [1, 6, 0], [0, 0, 2]])
    rows = twin_confusions(matrix, {0: 1, 1: 0})
    assert [(t.class_a, t.class_b, t.support_a, t.a_as_b, t.support_b, t.b_as_a) for t in rows] == [(0, 1, 7, 3, 7, 1)]
    assert twin_confusions(matrix, {}) == []


def _scores(num_videos=3, num_classes=4):
    rng = np.random.default_rng(0)
    return VideoScores(video_ids=np.array([f"v{i}" for i in range(num_videos)]),
                       paths=np.array([f"/data/v{i}.mp4" for i in range(num_videos)]),
                       labels=np.arange(num_videos) % num_classes, scores=rng.random((num_videos, num_classes)),
                       num_views=np.full(num_videos, 6),
                       class_names=np.array([f"class {c}" for c in range(num_classes)]), dataset="kinetics",
                       ensemble="sum")


def test_score_file_round_trip(tmp_path):
    original = _scores()
    save_test_scores(str(tmp_path / "test_scores.npz"), original)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_scores.npz"]  # no temporary left
    loaded = load_test_scores(str(tmp_path / "test_scores.npz"))
    assert loaded.scores.dtype == np.float32 and loaded.labels.dtype == np.int64
    np.testing.assert_allclose(loaded.scores, original.scores, rtol=1e-7)
    for name in ("video_ids", "paths", "labels", "num_views", "class_names"):
        assert getattr(loaded, name).tolist() == getattr(original, name).tolist(), name
    assert (loaded.dataset, loaded.ensemble) == ("kinetics", "sum")
    with np.load(tmp_path / "test_scores.npz", allow_pickle=False) as data:  # plain arrays, no pickles
        assert data["class_names"].tolist()[-1] == "class 3"


def test_bad_score_files_are_named_with_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="Score file not found: .*missing.npz"):
        load_test_scores(str(tmp_path / "missing.npz"))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"text\.npz is not a readable \.npz file"):
        load_test_scores(str(tmp_path / "text.npz"))
    np.savez(tmp_path / "other.npz", scores=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"other\.npz is not a test_scores\.npz: it lacks video_ids, paths"):
        load_test_scores(str(tmp_path / "other.npz"))
    arrays = {name: getattr(_scores(), name) for name in ("video_ids", "paths", "labels", "scores", "num_views",
                                                          "dataset", "ensemble")}
    np.savez(tmp_path / "short.npz", **arrays, class_names=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"short\.npz: class_names has shape \(2,\); scores have 4 columns"):
        load_test_scores(str(tmp_path / "short.npz"))
