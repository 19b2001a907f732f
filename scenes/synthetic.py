"""The pybullet-objects synthetic dataset: ``pybullet_data``'s random URDF meshes in the CO3D v2 layout.

Objects 000-799 are training objects, 800-899 validation, 900-999 reserved for held-out evaluation
(rendered only with ``include_reserved``). Each object is centred on the centre of pybullet's
``getAABB`` and scaled so its half-diagonal is 1; cameras circle it at distance 3 with a 42°
vertical field of view, world up +Z. Images come from pybullet's CPU TinyRenderer.

Layout under ROOT/random_objects/obj_NNN/: ``images/frame000000.jpg``, ``masks/frame000000.png``
and ``meta.json`` (written last: an object with a matching meta.json and all its files is done,
so an interrupted run resumes). Annotations and set lists are rewritten at the end of every
:func:`generate` from all meta.json files under ROOT.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .cameras import Cameras, intrinsics_from_fov, look_at
from .co3d_write import FrameRecord, SequenceRecord, write_category
from .errors import UserError
from .io import read_json, write_image, write_json

CATEGORY = "random_objects"
N_OBJECTS = 1000
DEFAULT_SPLITS = {"train": range(0, 800), "val": range(800, 900)}
RESERVED = range(900, 1000)
SUBSETS = {"train": ("fewview_train", "train"), "val": ("fewview_dev", "test"),
           "reserved": ("heldout_test", "test")}
DISTANCE = 3.0  # camera distance in object units (half-diagonals)
FOV_DEG = 42.0  # vertical field of view
ELEVATION_DEG = (25.0, 15.0)  # mean and amplitude of the elevation oscillation
COLOR_RANGE = (0.2, 1.0)
RENDER_KW = dict(lightDirection=[1, 1, 2], shadow=0, lightAmbientCoeff=0.5,
                 lightDiffuseCoeff=0.6, lightSpecularCoeff=0)
META_VERSION = 1


def urdf_path(obj: int) -> Path:
    """Path of object ``obj``'s URDF inside the installed ``pybullet_data``."""
    import pybullet_data

    return Path(pybullet_data.getDataPath()) / "random_urdfs" / f"{obj:03d}" / f"{obj:03d}.urdf"


def split_of(obj: int) -> str:
    """'train', 'val' or 'reserved' for an object id."""
    if obj in DEFAULT_SPLITS["train"]:
        return "train"
    return "val" if obj in DEFAULT_SPLITS["val"] else "reserved"


def sequence_name(obj: int) -> str:
    """Sequence name of an object, e.g. ``obj_812``."""
    return f"obj_{obj:03d}"


def parse_objects(spec: str) -> list[int]:
    """Object ids from a spec like ``"800-899"``, ``"0-799,800-809"`` or ``"812"``: sorted, unique."""
    ids: set[int] = set()
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        try:
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise UserError(
                f"bad object spec {part!r} in {spec!r}: expected ids or ranges like 800-899,912") from None
        if a > b or a < 0 or b >= N_OBJECTS:
            raise UserError(f"bad object range {part!r}: ids must be in 0-{N_OBJECTS - 1}, low <= high")
        ids.update(range(a, b + 1))
    if not ids:
        raise UserError(f"object spec {spec!r} names no objects")
    return sorted(ids)


def object_params(obj: int, seed: int) -> dict:
    """Seeded colour (RGB in [0.2, 1]), start azimuth az0 (degrees) and elevation phase phi (radians)."""
    rng = np.random.default_rng([int(seed), int(obj)])  # per object: independent of the others
    color = rng.uniform(*COLOR_RANGE, size=3)
    az0 = float(rng.uniform(0.0, 360.0))
    phi = float(rng.uniform(0.0, 2 * math.pi))
    return {"color": [float(c) for c in color], "az0_deg": az0, "phi": phi}


def camera_eyes(views: int, az0_deg: float, phi: float) -> np.ndarray:
    """Camera centres (views, 3) in the object frame: distance 3, azimuth steps, oscillating elevation."""
    i = np.arange(views)
    az = np.radians(az0_deg + 360.0 * i / views)
    el = np.radians(ELEVATION_DEG[0] + ELEVATION_DEG[1] * np.sin(2 * np.pi * i / views + phi))
    return DISTANCE * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)


def object_cameras(views: int, image_size: int, az0_deg: float, phi: float) -> Cameras:
    """OpenCV cameras (views) in the normalised object frame, looking at the origin, up +Z."""
    eye = torch.from_numpy(camera_eyes(views, az0_deg, phi))  # (N, 3) float64
    K = intrinsics_from_fov(FOV_DEG, image_size, image_size, dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return look_at(eye, torch.zeros(3, dtype=torch.float64), up, K, image_size, image_size)


def object_frame(p, body: int, client: int = 0) -> tuple[np.ndarray, float]:
    """Centre (3,) and half-diagonal of a body's AABB (union over base and links), pybullet units."""
    boxes = [p.getAABB(body, link, physicsClientId=client)
             for link in range(-1, p.getNumJoints(body, physicsClientId=client))]
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2)


def load_object(p, obj: int, color, client: int = 0) -> int:
    """Load object ``obj`` at the origin (identity pose) and paint base and links with ``color``."""
    body = p.loadURDF(str(urdf_path(obj)), [0, 0, 0], [0, 0, 0, 1], physicsClientId=client)
    for link in range(-1, p.getNumJoints(body, physicsClientId=client)):
        p.changeVisualShape(body, link, rgbaColor=[*color, 1.0], physicsClientId=client)
    return body


def _paths(obj: int, views: int) -> list[tuple[str, str]]:
    """(image, mask) paths relative to the root, one pair per view."""
    d = f"{CATEGORY}/{sequence_name(obj)}"
    return [(f"{d}/images/frame{i:06d}.jpg", f"{d}/masks/frame{i:06d}.png") for i in range(views)]


def _meta_path(root: Path, obj: int) -> Path:
    """Where an object's meta.json lives (written last, so it marks the object as done)."""
    return root / CATEGORY / sequence_name(obj) / "meta.json"


def _is_done(root: Path, obj: int, views: int, image_size: int, seed: int) -> bool:
    """Whether an object is already rendered with these settings (meta.json and every file present)."""
    path = _meta_path(root, obj)
    if not path.is_file():
        return False
    try:
        meta = read_json(path, "object metadata")
    except UserError:
        return False
    same = (meta.get("version"), meta.get("views"), meta.get("image_size"), meta.get("seed")) == (
        META_VERSION, views, image_size, seed)
    return same and all((root / a).is_file() and (root / b).is_file() for a, b in _paths(obj, views))


def pixel_centred_projection(proj, size: int) -> list[float]:
    """Shift a pybullet projection matrix by half a pixel so TinyRenderer samples pixel centres.

    TinyRenderer shades pixel (row i, col j) with the ray through (u, v) = (j, i + 1) of the OpenCV
    pixel grid (it samples OpenGL pixel corners), not (j + 0.5, i + 0.5): moving the image by
    -1/size NDC units in x and y (OpenGL, y up) puts every pixel's ray through its centre.
    """
    M = np.asarray(proj, dtype=np.float64).reshape(4, 4).T  # row-major; pybullet's is column-major
    M[:2] -= M[3] / size  # NDC x, y  -=  1/size (w = -z_eye is row 3)
    return M.T.reshape(-1).tolist()


def render_object(p, client: int, root: Path, obj: int, views: int, image_size: int, seed: int) -> dict:
    """Render one object's views, write images and masks, then its meta.json; returns the meta."""
    _meta_path(root, obj).unlink(missing_ok=True)  # an interrupted re-render must not look done
    seq_dir = root / CATEGORY / sequence_name(obj)
    for pattern in ("images/frame*.jpg", "masks/frame*.png", "*/.frame*"):
        for stale in seq_dir.glob(pattern):
            stale.unlink()  # an earlier render's frames (other settings) and temp files of a killed run
    prm = object_params(obj, seed)
    p.resetSimulation(physicsClientId=client)
    body = load_object(p, obj, prm["color"], client)
    centre, r = object_frame(p, body, client)
    eyes = centre + r * camera_eyes(views, prm["az0_deg"], prm["phi"])  # (N, 3) pybullet units
    proj = pixel_centred_projection(p.computeProjectionMatrixFOV(
        FOV_DEG, 1.0, 0.1 * r, 10.0 * r, physicsClientId=client), image_size)
    masses = []
    for (img_path, mask_path), eye in zip(_paths(obj, views), eyes):
        view = p.computeViewMatrix(eye.tolist(), centre.tolist(), [0, 0, 1], physicsClientId=client)
        _, _, rgba, _, seg = p.getCameraImage(
            image_size, image_size, view, proj, renderer=p.ER_TINY_RENDERER,
            physicsClientId=client, **RENDER_KW)
        # Row 0 is the top of the image, column 0 the left: the OpenCV layout (checked by the tests).
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(image_size, image_size, 4)[..., :3]
        mask = np.asarray(seg).reshape(image_size, image_size) == body  # (H, W) bool
        write_image(root / img_path, np.ascontiguousarray(rgb), quality=95)
        write_image(root / mask_path, mask.astype(np.uint8) * 255)
        masses.append(float(mask.sum()))
    empty = sum(m == 0 for m in masses)  # a broken mesh (object 168's vertices are NaN) draws nothing
    meta = {
        "version": META_VERSION, "object_id": obj, "urdf": f"random_urdfs/{obj:03d}/{obj:03d}.urdf",
        "split": split_of(obj), "seed": seed, "views": views, "image_size": image_size,
        "aabb_center": [float(c) for c in centre], "half_diagonal": r, **prm,
        "distance": DISTANCE, "fov_deg": FOV_DEG, "mask_mass": masses,
        "excluded": f"empty mask in {empty} of {views} views (broken mesh)" if empty else None,
    }
    write_json(_meta_path(root, obj), meta)  # last: marks the object as done
    return meta


_WORKER: dict = {}


def _init_worker() -> None:
    """Pool initializer: one DIRECT pybullet connection per worker process."""
    import pybullet as p

    _WORKER["p"], _WORKER["client"] = p, p.connect(p.DIRECT)


def _work(job: tuple) -> int:
    """Pool task: render one object with this worker's connection; returns its id."""
    render_object(_WORKER["p"], _WORKER["client"], *job)
    return job[1]


def sequence_record(meta: dict) -> SequenceRecord:
    """The annotation record of a rendered object, cameras recomputed from its meta.json."""
    obj, views, size = meta["object_id"], meta["views"], meta["image_size"]
    frames = [FrameRecord(i, a, b, mask_mass=m)
              for i, ((a, b), m) in enumerate(zip(_paths(obj, views), meta["mask_mass"]))]
    cams = object_cameras(views, size, meta["az0_deg"], meta["phi"])
    extra = {k: meta[k] for k in ("object_id", "urdf", "split", "seed", "aabb_center",
                                  "half_diagonal", "color", "az0_deg", "phi")}
    return SequenceRecord(sequence_name(obj), frames, cams,
                          "train_known" if meta["split"] == "train" else "test_known", extra)


def write_annotations(root: str | Path) -> dict:
    """(Re)write annotations and set lists for all rendered objects under ``root``: {sequences, excluded}."""
    root = Path(root)
    records, lists, bad, excluded = [], {}, [], []
    for path in sorted((root / CATEGORY).glob("obj_*/meta.json")):
        meta = read_json(path, "object metadata")
        if meta.get("excluded"):
            excluded.append(meta["object_id"])
            continue
        if not all((root / a).is_file() and (root / b).is_file()
                   for a, b in _paths(meta["object_id"], meta["views"])):
            bad.append(path.parent.name)
            continue
        records.append(sequence_record(meta))
        subset, part = SUBSETS[meta["split"]]
        lists.setdefault(subset, {part: []})[part].append(records[-1].name)
    if bad:
        warnings.warn(f"{len(bad)} object(s) have missing files and were left out of the annotations: "
                      f"{', '.join(bad[:5])}", stacklevel=2)
    if records:
        write_category(root, CATEGORY, records, lists)
    return {"sequences": len(records), "excluded": excluded}


def _check_objects(objects: list[int], include_reserved: bool) -> None:
    """Refuse ids out of range, and reserved ids unless ``include_reserved`` (then warn)."""
    out = [o for o in objects if not 0 <= o < N_OBJECTS]
    if out:
        raise UserError(f"object ids must be in 0-{N_OBJECTS - 1}; got {out[:5]}")
    reserved = [o for o in objects if o in RESERVED]
    if reserved and not include_reserved:
        shown = ", ".join(f"{o:03d}" for o in reserved[:5]) + (", ..." if len(reserved) > 5 else "")
        raise UserError(f"objects {shown} are reserved for held-out evaluation (900-999); "
                        "pass --include-reserved to render them")
    if reserved:
        warnings.warn(f"rendering {len(reserved)} reserved held-out object(s) (900-999) "
                      "into subset heldout_test", stacklevel=3)


def generate(root, objects: list[int] | None = None, views: int = 32, image_size: int = 256,
             seed: int = 0, workers: int | None = None, include_reserved: bool = False,
             progress: bool = True) -> dict:
    """Render objects (default train+val, 000-899) into ``root``, rewrite its annotations; return a summary."""
    objects = sorted(set(int(o) for o in objects)) if objects is not None else [
        *DEFAULT_SPLITS["train"], *DEFAULT_SPLITS["val"]]
    _check_objects(objects, include_reserved)
    if views < 1 or image_size < 8 or seed < 0:
        raise UserError(f"need views >= 1, image_size >= 8 and seed >= 0 (got {views}, {image_size}, {seed})")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    todo = [o for o in objects if not _is_done(root, o, views, image_size, seed)]
    jobs = [(root, o, views, image_size, seed) for o in todo]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    start = time.perf_counter()
    with tqdm(total=len(jobs), desc="rendering objects", unit="obj", disable=not progress) as bar:
        if workers == 1:
            import pybullet as p

            client = p.connect(p.DIRECT)
            try:
                for job in jobs:
                    render_object(p, client, *job)
                    bar.update()
            finally:
                p.disconnect(client)
        elif jobs:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            with ctx.Pool(workers, initializer=_init_worker) as pool:
                for _ in pool.imap_unordered(_work, jobs):
                    bar.update()
    seconds = time.perf_counter() - start
    written = write_annotations(root)
    excluded = sorted(set(written["excluded"]) & set(objects))
    if excluded:
        warnings.warn(f"object(s) {', '.join(f'{o:03d}' for o in excluded)} rendered empty masks "
                      "(broken meshes) and are left out of the annotations", stacklevel=2)
    return {"root": str(root), "objects": objects, "rendered": len(jobs),
            "skipped": len(objects) - len(jobs), "views": views, "image_size": image_size,
            "seed": seed, "workers": workers, "seconds": seconds,
            "seconds_per_object": seconds / len(jobs) if jobs else 0.0,
            "sequences": written["sequences"], "excluded": excluded}
