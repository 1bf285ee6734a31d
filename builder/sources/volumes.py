"""Loading an image/label NIfTI pair into RAS+ arrays with every check a real data set needs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from builder.records import CaseError

AFFINE_TOLERANCE_MM = 1e-3  # relative to voxel size; label and image grids must coincide


def _read(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise CaseError("missing_file", str(path), "file does not exist")
    try:
        img = nib.load(str(path))
        img = nib.as_closest_canonical(img)  # RAS+: axis 0 -> patient right, 1 -> anterior, 2 -> superior
    except CaseError:
        raise
    except Exception as exc:  # nibabel raises many types for broken files
        raise CaseError("unreadable_file", str(path), f"cannot read NIfTI: {type(exc).__name__}: {exc}") from exc
    return img


def _data(img: nib.Nifti1Image, path: Path, channel: int = 0) -> np.ndarray:
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # a truncated gzip stream fails here, not at load
        raise CaseError("unreadable_file", str(path), f"cannot decode voxel data: {type(exc).__name__}: {exc}") from exc
    if data.ndim == 4:
        if channel >= data.shape[3]:
            raise CaseError("bad_channel", str(path), f"channel {channel} requested, image has {data.shape[3]}")
        data = data[..., channel]
    if data.ndim != 3:
        raise CaseError("bad_dimensions", str(path), f"expected a 3D volume, got shape {data.shape}")
    return data


def load_volume_pair(image_path: Path, label_path: Path, channel: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Image (float32), label map (integer), RAS+ affine and voxel spacing of one case."""
    image_nii = _read(image_path)
    label_nii = _read(label_path)
    image = _data(image_nii, image_path, channel)
    labels = _data(label_nii, label_path)
    if image.shape != labels.shape:
        raise CaseError("shape_mismatch", str(label_path),
                        f"label shape {labels.shape} differs from image shape {image.shape} ({image_path.name})")
    spacing = tuple(float(s) for s in image_nii.header.get_zooms()[:3])
    tolerance = AFFINE_TOLERANCE_MM * max(1.0, max(spacing)) * 10
    deviation = float(np.abs(image_nii.affine - label_nii.affine).max())
    if deviation > tolerance:
        raise CaseError("affine_mismatch", str(label_path),
                        f"label affine differs from the image's ({image_path.name}) by {deviation:.4g} "
                        f"(tolerance {tolerance:.3g})")
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise CaseError("nan_voxels", str(image_path), f"{bad} voxels are NaN or infinite")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not np.all(labels == np.round(labels)):
            raise CaseError("non_integer_labels", str(label_path), "label map holds non-integer values")
    labels = np.asarray(labels).astype(np.int32, copy=False)
    if labels.min() < 0:
        raise CaseError("negative_label", str(label_path), f"label map holds negative value {int(labels.min())}")
    return image, labels, np.asarray(image_nii.affine, dtype=np.float64), spacing
