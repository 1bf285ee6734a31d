"""``images/`` + ``masks/`` with equal stems: binary masks, or multi-class with a label map from the config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from builder.records import Case, CaseError, CaseRef, ErrorRecord
from builder.sources.base import Adapter, check_label_values, default_orientation, resolve_metadata
from builder.sources.images2d import IMAGE_SUFFIXES, read_image, read_mask


def list_images(folder: Path) -> dict[str, Path]:
    """stem -> file for every image-like file in a folder."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


class Folder2dAdapter(Adapter):
    format = "folder2d"

    def refs(self) -> Iterator[CaseRef | ErrorRecord]:
        if (err := self.require_dir()) is not None:
            yield err
            return
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                yield self.error(folder, "missing_folder", f"expected folder {folder.name}/ in {self.root}")
                return
        images, masks = list_images(images_dir), list_images(masks_dir)
        if not images:
            yield self.error(images_dir, "empty_source", f"no images in {images_dir}")
            return
        for stem, image in images.items():
            mask = masks.get(stem)
            if mask is None:
                yield self.error(image, "missing_mask", f"no mask with stem '{stem}' in {masks_dir}", stem)
                continue
            yield CaseRef(self.spec, stem, (str(image), str(mask)))
        for stem in sorted(set(masks) - set(images)):
            yield self.error(masks[stem], "missing_image", f"mask without an image of stem '{stem}'", stem)

    def load(self, ref: CaseRef) -> Case:
        names = dict(self.spec.labels or {1: self.spec.options.get("target", "target")})
        multiclass = len(names) > 1 or max(names) > 1
        image = read_image(Path(ref.files[0]))
        mask = read_mask(Path(ref.files[1]), multiclass=multiclass)
        if mask.shape != image.shape[:2]:
            raise CaseError("shape_mismatch", ref.files[1],
                            f"mask size {mask.shape[::-1]} differs from image size {image.shape[1::-1]}")
        check_label_values(mask, names, ref.files[1])
        mod, region, lic, names = resolve_metadata(self.spec, modality=None, license=None, label_names=names)
        return Case(source=self.spec.name, case_id=ref.case_id, modality=mod, body_region=region, license=lic,
                    image=image, label_map=mask, label_names=names, files=ref.files,
                    patient_id=ref.case_id,
                    split=ref.split, orientation=default_orientation(mod, self.spec.orientation))
