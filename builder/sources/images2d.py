"""Reading 2D images and masks from disk into arrays, with the checks lossy and odd files need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from builder.records import CaseError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise CaseError("missing_file", str(path), "file does not exist")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CaseError("unreadable_file", str(path), f"not a readable image: {type(exc).__name__}: {exc}") from exc
    return img


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Display range for an image that is not 8-bit: 0.5–99.5 percentile scaling."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float32)
    lo, hi = np.percentile(values, (0.5, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((values - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def image_array(array: np.ndarray) -> np.ndarray:
    """A displayable uint8 image: grey (H, W), or RGB (H, W, 3) unless its channels are all equal."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] >= 3:
        array = array[..., :3]
        if np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
            array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"unsupported image shape {array.shape}")
    return np.ascontiguousarray(to_uint8(array))


def read_image(path: Path) -> np.ndarray:
    img = _open(path)
    if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr"):
        img = img.convert("RGB")
    return image_array(np.asarray(img))


def read_mask(path: Path, *, multiclass: bool) -> np.ndarray:
    """Integer mask. Binary masks come back as {0, 1} whatever their encoding ({0,1}, {0,255}, RGB);
    lossy (JPEG) masks are thresholded at half range instead of trusted value by value."""
    img = _open(path)
    array = np.asarray(img.convert("L") if img.mode not in ("L", "I", "I;16", "1") else img)
    if array.ndim != 2:
        raise CaseError("bad_mask", str(path), f"mask must be single-channel, got shape {array.shape}")
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    if multiclass:
        if lossy:
            raise CaseError("lossy_multiclass_mask", str(path),
                            "a multi-class mask stored as JPEG cannot be trusted; use PNG")
        return array.astype(np.int32)
    top = int(array.max()) if array.size else 0
    if top <= 1 and not lossy:
        return (array > 0).astype(np.int32)
    return (array >= (128 if top > 1 else 1)).astype(np.int32)
