"""A copy of a video with text drawn on its frames (the current prediction), written as an H.264 mp4 with PyAV.

Streaming: source frames are decoded, drawn on and encoded one at a time, so a long video costs no more memory
than a short one. The text is drawn with Pillow (a torchvision dependency): its default font scales to any size,
which no torchvision or PyAV function offers. The file appears under its final name only once complete.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import av
from PIL import Image, ImageDraw, ImageFont

from hiera_video.data.video_io import VideoDecodeError
from hiera_video.utils.atomic import temporary_name

# Text height as a fraction of the frame height (at least MIN_FONT_PIXELS).
FONT_FRACTION = 1 / 16
MIN_FONT_PIXELS = 10
BACKGROUND = (0, 0, 0, 160)  # translucent black behind the text
TEXT_COLOUR = (255, 255, 255)


class OverlayWriter:
    """Copies `source` into the mp4 `destination` frame by frame; `write_until(t, lines)` draws `lines` on the
    frames shown before second `t`. Use as a context manager: leaving it writes the remaining frames without text
    and publishes the file (or, after an error, removes the partial one)."""

    def __init__(self, source: str, destination: str) -> None:
        self.destination = destination
        self.temporary = temporary_name(destination)
        folder = os.path.dirname(destination)
        if folder:
            os.makedirs(folder, exist_ok=True)
        try:
            self.input = av.open(source)
        except av.error.FFmpegError as error:
            raise VideoDecodeError(source, f"overlay: {error}") from error
        try:
            self.output = av.open(self.temporary, "w", format="mp4")
        except BaseException:
            self.input.close()
            raise
        try:
            source_stream = self.input.streams.video[0]
            rate = source_stream.guessed_rate or source_stream.average_rate or Fraction(30)
            self.fps = float(rate)
            self.frames = self.input.decode(source_stream)
            self.next_index = 0  # index of the next source frame
            context = source_stream.codec_context
            self.width, self.height = context.width // 2 * 2, context.height // 2 * 2  # yuv420p needs even sizes
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = self.output.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            if codec == "libx264":
                stream.options = {"preset": "veryfast"}  # an overlay is for looking at: encoding speed first
            self.stream = stream
            self.font_size = max(MIN_FONT_PIXELS, round(self.height * FONT_FRACTION))
            self.font = ImageFont.load_default(size=self.font_size)
        except BaseException:
            self._discard()
            raise

    def _draw(self, image: Image.Image, lines: Sequence[str]) -> Image.Image:
        image = image.crop((0, 0, self.width, self.height)) if image.size != (self.width, self.height) else image
        if not lines:
            return image
        draw = ImageDraw.Draw(image, "RGBA")
        text = "\n".join(lines)
        margin = max(2, self.font_size // 4)
        left, top, right, bottom = draw.multiline_textbbox((margin, margin), text, font=self.font)
        draw.rectangle((0, 0, right + margin, bottom + margin), fill=BACKGROUND)
        draw.multiline_text((margin, margin), text, font=self.font, fill=TEXT_COLOUR)
        return image

    def write_until(self, seconds: float | None, lines: Sequence[str]) -> None:
        """Draw `lines` on every source frame shown before `seconds` (every remaining frame for None) and encode
        them."""
        stop = None if seconds is None else int(round(seconds * self.fps))
        while stop is None or self.next_index < stop:
            try:
                frame = next(self.frames, None)
            except av.error.FFmpegError as error:
                raise VideoDecodeError(self.input.name, f"overlay, frame {self.next_index}: {error}") from error
            if frame is None:
                return
            image = self._draw(frame.to_image(), lines)
            self.output.mux(self.stream.encode(av.VideoFrame.from_image(image)))
            self.next_index += 1

    def _discard(self) -> None:
        self.output.close()
        self.input.close()
        if os.path.exists(self.temporary):
            os.remove(self.temporary)

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            self._discard()
            return
        try:
            self.write_until(None, [])
            self.output.mux(self.stream.encode())
            self.output.close()
            self.input.close()
            os.replace(self.temporary, self.destination)
        except BaseException:
            self._discard()
            raise
