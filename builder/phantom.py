"""A deterministic digital phantom: synthetic abdominal CT written as an MSD data set.

It exists so the embedded default (``configs/demo.toml``) builds on a fresh machine with no network,
no key and no download, through the same ``msd`` adapter as real data. It is demo data, labelled so
everywhere (source ``demo_phantom``, dataset.json description, licence CC0-1.0), never a substitute for
real scans.

Anatomy is defined in world millimetres (RAS+: +x patient right, +y anterior, +z superior) and sampled
onto each case's own voxel grid through its affine, so cases stored in other orientations (LPS, LAS)
hold the same patient anatomy and exercise the reorientation path. Same seed, same bytes: gzip streams
are written with a fixed timestamp.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from builder.config import BuildConfig
from builder.io import atomic_write_bytes
from builder.records import SourceSpec

SOURCE_NAME = "demo_phantom"
LICENSE = "CC0-1.0"
LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "aorta",
          6: "vertebra", 7: "liver_lesion"}
LABEL_IDS = {name: i for i, name in LABELS.items()}
# Storage orientation cycled over cases: axis codes of the voxel axes (x, y, z) as written to disk.
STORAGE = ("RAS", "LPS", "LAS")
AXIS_SIGN = {"R": 1, "L": -1, "A": 1, "P": -1, "S": 1, "I": -1}
HU = {"air": -1000.0, "skin": 20.0, "fat": -100.0, "muscle": 50.0, "bowel": 25.0, "gas": -900.0,
      "liver": 100.0, "spleen": 115.0, "kidney_cortex": 170.0, "kidney_medulla": 110.0, "aorta": 190.0,
      "ivc": 130.0, "cancellous": 230.0, "cortical": 750.0, "csf": 10.0}
FOV_MM = 360.0  # in-plane field of view, wide enough for the largest body


def _field(x, y, z, centre, radii, angle: float = 0.0, power: float = 2.0) -> np.ndarray:
    """Normalised (super)ellipsoid distance: < 1 inside. ``angle`` rotates the axial cross-section."""
    dx, dy = x - centre[0], y - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    out = np.abs(u / radii[0]) ** power + np.abs(v / radii[1]) ** power
    if len(radii) == 3:
        out = out + np.abs((z - centre[2]) / radii[2]) ** 2
    return out


def _grid(rng: np.random.Generator, storage: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """A storage affine (diagonal, signs from the orientation code) and world coordinates per voxel axis."""
    in_plane = float(rng.uniform(1.7, 2.0))
    thickness = float(rng.choice([4.0, 5.0]))
    n_xy = int(math.ceil(FOV_MM / in_plane))
    n_z = int(math.ceil(110.0 / thickness))
    shape, spacing = (n_xy, n_xy, n_z), (in_plane, in_plane, thickness)
    affine = np.eye(4)
    coords = []
    table_offset = float(rng.uniform(-80, -40))  # scanners rarely put z = 0 at the organ's centre
    centre = (0.0, 0.0, table_offset)
    for axis, code in enumerate(storage):
        step = AXIS_SIGN[code] * spacing[axis]
        origin = centre[axis] - step * (shape[axis] - 1) / 2.0
        affine[axis, axis], affine[axis, 3] = step, origin
        coords.append(origin + step * np.arange(shape[axis]))
    x, y, z = coords
    return affine, (x[:, None, None], y[None, :, None], z[None, None, :] - table_offset)


LESION_REACH = {"round": 1.0, "oval": 1.6, "lobulated": 1.35}  # furthest extent, in lesion radii
LESION_RIM_MM = 4.0  # liver kept around every lesion, so each lies wholly inside it
LESION_GAP_MM = 6.0  # between lesions, so each is its own connected component


def _lesion_mask(rng: np.random.Generator, x, y, z, centre: tuple[float, float, float], radius: float,
                 kind: str) -> np.ndarray:
    if kind == "round":
        return _field(x, y, z, centre, (radius, radius, radius)) <= 1
    if kind == "oval":
        return _field(x, y, z, centre, (radius * 1.6, radius * 0.9, radius), angle=float(rng.uniform(0, math.pi))) <= 1
    # Lobulated: three lobes around a small core, spaced so the outline stays visibly notched.
    mask = _field(x, y, z, centre, (radius * 0.5,) * 3) <= 1
    start = float(rng.uniform(0, 2 * math.pi))
    for k in range(3):
        theta = start + k * 2 * math.pi / 3
        lobe = (centre[0] + 0.8 * radius * math.cos(theta), centre[1] + 0.8 * radius * math.sin(theta), centre[2])
        mask |= _field(x, y, z, lobe, (radius * 0.55,) * 3) <= 1
    return mask


def _lesions(rng: np.random.Generator, x, y, z, liver: np.ndarray, spacing: tuple[float, float, float], n: int
             ) -> list[tuple[np.ndarray, float]]:
    """1–3 hypodense lesions wholly inside the liver, clustered in z so some slices show several.

    Centres are drawn among liver voxels deep enough for the lesion's reach (a distance transform), so
    containment and separation hold by construction instead of by trial and error.
    """
    depth = ndimage.distance_transform_edt(liver, sampling=spacing)  # mm to the liver's edge
    xs, ys, zs = x[:, 0, 0], y[0, :, 0], z[0, 0, :]
    placed: list[tuple[np.ndarray, float]] = []  # (centre, reach)
    out: list[tuple[np.ndarray, float]] = []
    for _ in range(n):
        kind = ("round", "oval", "lobulated")[int(rng.integers(3))]
        radius = float(rng.uniform(7.0, 18.0))
        attempts = 5
        for attempt in range(attempts):  # shrink until the lesion fits; the last try may leave the level
            reach = radius * LESION_REACH[kind]
            ok = depth >= reach + LESION_RIM_MM
            for centre, other in placed:
                d2 = ((xs[:, None, None] - centre[0]) ** 2 + (ys[None, :, None] - centre[1]) ** 2
                      + (zs[None, None, :] - centre[2]) ** 2)
                ok &= d2 >= (reach + other + LESION_GAP_MM) ** 2
            if placed and attempt < attempts - 1:  # same level as the first lesion: several per slice
                ok &= (np.abs(zs - placed[0][0][2]) <= 6.0)[None, None, :]
            candidates = np.argwhere(ok)
            if len(candidates):
                break
            radius = max(6.0, radius * 0.8)
        else:
            continue
        pick = candidates[int(rng.integers(len(candidates)))]
        centre = np.array([xs[pick[0]], ys[pick[1]], zs[pick[2]]])
        placed.append((centre, reach))
        out.append((_lesion_mask(rng, x, y, z, tuple(centre), radius, kind), float(rng.uniform(15.0, 55.0))))
    return out


def phantom_case(index: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU volume int16, label map uint8, affine) of one case; anatomy varies deterministically with the seed."""
    rng = np.random.default_rng([seed, index])
    affine, (x, y, z) = _grid(rng, STORAGE[index % len(STORAGE)])
    spacing = tuple(float(abs(affine[i, i])) for i in range(3))
    scale = float(rng.uniform(0.9, 1.08))
    ox = float(rng.uniform(-15, 15))  # the patient is rarely centred on the scanner's x = 0
    oy = float(rng.uniform(-10, 10))

    def jitter(mm: float = 5.0) -> float:
        return float(rng.uniform(-mm, mm))

    def at(cx: float, cy: float) -> tuple[float, float]:
        return ox + scale * cx, oy + scale * cy

    shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    hu = np.full(shape, HU["air"], dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    flat = np.zeros(shape[2])[None, None, :]  # broadcasts an axial shape along z

    def paint(mask: np.ndarray, value: float, label: int | None = None) -> None:
        mask = np.broadcast_to(mask, shape)
        hu[mask] = value
        if label is not None:
            labels[mask] = label

    body_r = (150 * scale * float(rng.uniform(0.95, 1.05)), 108 * scale * float(rng.uniform(0.95, 1.05)))
    fat_mm = float(rng.uniform(12, 28))
    body = _field(x, y, flat, at(0, 0), body_r, power=2.3)
    paint(body <= 1, HU["skin"])

    def shrink(mm: float) -> tuple[float, float]:
        return body_r[0] - mm, body_r[1] - mm

    paint(_field(x, y, flat, at(0, 0), shrink(2.5), power=2.3) <= 1, HU["fat"])
    paint(_field(x, y, flat, at(0, 0), shrink(2.5 + fat_mm), power=2.3) <= 1, HU["muscle"])
    cavity = _field(x, y, flat, at(0, 0), shrink(12 + fat_mm), power=2.3) <= 1
    paint(cavity, HU["fat"])
    for side in (1, -1):  # paraspinal and psoas muscles
        paint(_field(x, y, flat, at(side * 38, -88), (26 * scale, 20 * scale)) <= 1, HU["muscle"])
        paint((_field(x, y, flat, at(side * 40, -48), (14 * scale, 14 * scale), side * 0.3) <= 1) & (z < 10),
              HU["muscle"])
    for _ in range(int(rng.integers(3, 6))):  # bowel loops, some with gas, anterior and to the patient's left
        bx, by = at(float(rng.uniform(-90, 20)), float(rng.uniform(20, 70)))
        r = float(rng.uniform(14, 24)) * scale
        bz = float(rng.uniform(-50, 30))
        paint((_field(x, y, z, (bx, by, bz), (r, r * 0.8, 45)) <= 1) & cavity, HU["bowel"])
        if rng.random() < 0.6:
            paint(_field(x, y, z, (bx, by + 0.4 * r, bz), (0.5 * r, 0.3 * r, 30)) <= 1, HU["gas"])

    # Organs, highest priority first; each is kept one fat gap away from those before it.
    vx, vy = at(jitter(2), -55)
    vertebra = (_field(x, y, flat, (vx, vy), (21 * scale, 17 * scale)) <= 1)
    canal = _field(x, y, flat, (vx, vy - 27 * scale), (9 * scale, 8 * scale)) <= 1
    arch = (_field(x, y, flat, (vx, vy - 27 * scale), (16 * scale, 15 * scale)) <= 1) & ~canal
    spinous = _field(x, y, flat, (vx, vy - 47 * scale), (5 * scale, 13 * scale)) <= 1
    vertebra = np.broadcast_to(vertebra | arch | spinous, shape)
    aorta = np.broadcast_to(_field(x, y, flat, at(-14 + jitter(3), -25), (11 * scale, 11 * scale)) <= 1, shape)
    kidney_r = _field(x, y, z, (*at(62 + jitter(), -55 + jitter()), -25 + jitter(8)), (24 * scale, 34 * scale, 50),
                      angle=0.45)
    kidney_l = _field(x, y, z, (*at(-62 + jitter(), -52 + jitter()), -12 + jitter(8)), (24 * scale, 34 * scale, 50),
                      angle=-0.45)
    spleen = _field(x, y, z, (*at(-82 + jitter(), -32 + jitter()), 22 + jitter(8)),
                    (27 * scale, 50 * scale, 48), angle=-0.6) <= 1
    liver = (_field(x, y, z, (*at(62 + jitter(), 8 + jitter()), 28 + jitter(6)), (66 * scale, 76 * scale, 85),
                    angle=0.35 + jitter(0.1)) <= 1)
    liver |= _field(x, y, z, (*at(5, 42 + jitter()), 35), (36 * scale, 24 * scale, 40)) <= 1  # left lobe
    ivc = np.broadcast_to(_field(x, y, flat, at(22, -30), (11 * scale, 14 * scale)) <= 1, shape)

    taken = np.zeros(shape, dtype=bool)
    gap = np.ones((3, 3, 1), dtype=bool)
    organs = {}
    for name, mask in (("vertebra", vertebra), ("aorta", aorta), ("ivc", ivc), ("kidney_right", kidney_r <= 1),
                       ("kidney_left", kidney_l <= 1), ("spleen", spleen), ("liver", liver)):
        mask = mask & cavity if name in ("spleen", "liver", "kidney_right", "kidney_left") else mask.copy()
        mask &= ~ndimage.binary_dilation(taken, structure=gap, iterations=2)
        organs[name] = mask
        taken |= mask
    liver = organs["liver"] = ndimage.binary_opening(organs["liver"], structure=gap, iterations=2)

    paint(organs["ivc"], HU["ivc"])
    paint(organs["aorta"], HU["aorta"], LABEL_IDS["aorta"])
    paint(organs["spleen"], HU["spleen"], LABEL_IDS["spleen"])
    paint(liver, HU["liver"], LABEL_IDS["liver"])
    for name, dist in (("kidney_right", kidney_r), ("kidney_left", kidney_l)):
        paint(organs[name], HU["kidney_cortex"], LABEL_IDS[name])
        paint(organs[name] & (dist <= 0.45), HU["kidney_medulla"])
    cortex = organs["vertebra"] & ~ndimage.binary_erosion(organs["vertebra"], structure=gap, iterations=2)
    paint(organs["vertebra"], HU["cancellous"], LABEL_IDS["vertebra"])
    paint(cortex, HU["cortical"])
    paint(canal, HU["csf"])
    # Mostly 2–3 lesions, so any case that lands in a small split still gives multi-object samples.
    n_lesions = 1 if index % 4 == 3 else int(rng.integers(2, 4))
    for mask, value in _lesions(rng, x, y, z, liver, spacing, n_lesions):
        paint(mask, value, LABEL_IDS["liver_lesion"])

    # Partial volume at boundaries, then correlated CT-like noise.
    hu = ndimage.gaussian_filter(hu, sigma=(0.7, 0.7, 0.3))
    noise = ndimage.gaussian_filter(rng.normal(0.0, 30.0, shape).astype(np.float32), sigma=(0.8, 0.8, 0.2))
    hu += np.where(hu > -900, noise, noise * 0.3)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), labels, affine


def _nifti_gz(array: np.ndarray, affine: np.ndarray) -> bytes:
    """NIfTI bytes gzipped with a fixed timestamp, so the same array gives the same file."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)  # CT noise barely compresses further


def dataset_json(n_cases: int, seed: int) -> dict:
    names = [f"phantom_{i:03d}" for i in range(n_cases)]
    return {
        "name": "MedGround demo phantom (synthetic)",
        "description": ("Synthetic demo data generated by builder.phantom: abdominal CT-like digital phantoms "
                        "(not patient data, not for any clinical or research conclusion)."),
        "reference": "MedGround builder.phantom", "licence": LICENSE, "release": f"seed {seed}",
        "tensorImageSize": "3D", "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "numTraining": n_cases, "numTest": 0,
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names],
        "test": [],
    }


def _write_if_changed(path: Path, data: bytes) -> None:
    """Unchanged files keep their mtime, so the candidates stage's resume keys stay valid."""
    if path.is_file() and path.read_bytes() == data:
        return
    atomic_write_bytes(path, data)


def write_phantom(folder: Path | str, n_cases: int = 6, seed: int = 0) -> Path:
    """Write (or refresh) the phantom MSD data set in ``folder``; files already identical are left alone."""
    folder = Path(folder)
    meta = dataset_json(n_cases, seed)
    wanted = set()
    for i, entry in enumerate(meta["training"]):
        hu, labels, affine = phantom_case(i, seed)
        for rel, array in ((entry["image"], hu), (entry["label"], labels)):
            path = (folder / rel).resolve()
            wanted.add(path)
            _write_if_changed(path, _nifti_gz(array, affine))
    for sub in ("imagesTr", "labelsTr"):  # cases from an earlier, larger phantom
        for stale in (folder / sub).glob("*.nii.gz"):
            if stale.resolve() not in wanted:
                stale.unlink()
    _write_if_changed(folder / "dataset.json", (json.dumps(meta, indent=2) + "\n").encode())
    return folder


def ensure_phantom(config: BuildConfig, out_dir: Path | str) -> SourceSpec | None:
    """With ``[demo] phantom = true``: write the phantom under ``<out_dir>/sources/demo_phantom`` and
    return its source, for the caller to append to ``config.sources``; otherwise None.

    ``[demo] cases`` (default 6) and ``seed`` (default ``[build] seed``) choose the phantom.
    """
    section = config.section("demo")
    if not section.get("phantom", False):
        return None
    folder = write_phantom(Path(out_dir) / "sources" / SOURCE_NAME, n_cases=int(section.get("cases", 6)),
                           seed=int(section.get("seed", config.seed)))
    return SourceSpec(name=SOURCE_NAME, format="msd", path=str(folder.resolve()), modality="CT",
                      body_region="abdomen", license=LICENSE)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("phantom", help="write the synthetic demo phantom (abdominal CT, MSD layout)")
    p.add_argument("--out", type=Path, required=True, help="output folder (the MSD data set root)")
    p.add_argument("--cases", type=int, default=6, help="number of cases (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.cases < 1:
        raise SystemExit("phantom: --cases must be at least 1")
    folder = write_phantom(args.out, n_cases=args.cases, seed=args.seed)
    print(f"wrote {args.cases} phantom cases (seed {args.seed}) to {folder}")
    return 0
