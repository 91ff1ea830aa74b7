"""Episode videos: mp4 through imageio's ffmpeg plugin (``imageio-ffmpeg`` ships the binary), GIF via
Pillow when ffmpeg is not available; A/B side-by-side composition; optional per-frame overlays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def ffmpeg_available() -> bool:
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).exists()
    except Exception:  # noqa: BLE001 -- any failure means "no ffmpeg"
        return False


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: pad by one black row/column where needed."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
    return frame


def blend_overlay(frame: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend ``overlay`` onto ``frame``: an HxWx3 uint8 image, or an HxW float map (colour-mapped, jet)."""
    from PIL import Image

    ov = np.asarray(overlay)
    if ov.ndim == 2:
        import matplotlib

        lo, hi = float(np.nanmin(ov)), float(np.nanmax(ov))
        norm = (ov - lo) / (hi - lo) if hi > lo else np.zeros_like(ov, dtype=float)
        ov = (matplotlib.colormaps["jet"](norm)[..., :3] * 255).astype(np.uint8)
    h, w = frame.shape[:2]
    if ov.shape[:2] != (h, w):
        ov = np.asarray(Image.fromarray(ov.astype(np.uint8)).resize((w, h), Image.BILINEAR))
    out = (1 - alpha) * frame.astype(np.float32) + alpha * ov.astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def write_video(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    fps: int = 20,
    overlays: Sequence[np.ndarray] | None = None,
    prefer: str = "mp4",
) -> Path:
    """Write frames (HxWx3 uint8) to ``path``; returns the path written (``.gif`` if mp4 is impossible).

    ``overlays``: one per frame (or one fewer: the last frame then has none); each is shown blended onto a
    copy of the frame placed to its right.
    """
    if not len(frames):
        raise ValueError("no frames to write")
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    if overlays is not None:
        ov = list(overlays)
        frames = [
            np.concatenate([f, blend_overlay(f, ov[i]) if i < len(ov) else f], axis=1)
            for i, f in enumerate(frames)
        ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if prefer == "mp4" and ffmpeg_available():
        import imageio.v2 as iio

        mp4 = path.with_suffix(".mp4")
        with iio.get_writer(
            mp4,
            fps=fps,
            codec="libx264",
            quality=7,
            pixelformat="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
        ) as w:
            for f in frames:
                w.append_data(_even(f))
        return mp4
    from PIL import Image

    gif = path.with_suffix(".gif")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return gif


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    path = Path(path)
    if path.suffix == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            return [np.asarray(fr.convert("RGB")) for fr in ImageSequence.Iterator(im)]
    import imageio.v2 as iio

    with iio.get_reader(path) as r:
        return [np.asarray(f)[..., :3] for f in r]


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, min(img.width, 8 + 7 * len(text)), 14], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(img)


def side_by_side(
    path: str | os.PathLike,
    videos: Sequence[str | os.PathLike],
    labels: Sequence[str],
    fps: int = 20,
) -> Path:
    """Compose episode videos (e.g. baseline | IVRA of one unit) left to right, labelled; the shorter
    episodes hold their last frame."""
    clips = [read_video(v) for v in videos]
    n = max(len(c) for c in clips)
    h = max(c[0].shape[0] for c in clips)
    out = []
    for i in range(n):
        row = []
        for clip, label in zip(clips, labels):
            f = clip[min(i, len(clip) - 1)]
            if f.shape[0] != h:
                f = np.pad(f, ((0, h - f.shape[0]), (0, 0), (0, 0)))
            row.append(_label(f, label))
        out.append(np.concatenate(row, axis=1))
    return write_video(path, out, fps=fps)
