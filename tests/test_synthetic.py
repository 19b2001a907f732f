"""The pybullet-objects generator, checked against the renderer: mesh vertices land in the masks."""

from __future__ import annotations

import gzip
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from scenes import synthetic
from scenes.co3d import CO3DDataset, CO3DOptions
from scenes.errors import UserError
from scenes.io import read_image

p = pytest.importorskip("pybullet")

VAL_OBJECTS = [812, 857]
TRAIN_OBJECTS = [3]
VIEWS, SIZE = 8, 128
RAW = CO3DOptions(crop=False, image_size=None, normalize=False, masked=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two val objects and one train object, rendered in two calls (the second adds to the root)."""
    root = tmp_path_factory.mktemp("pybullet_objects")
    first = synthetic.generate(root, VAL_OBJECTS, views=VIEWS, image_size=SIZE, workers=2, progress=False)
    second = synthetic.generate(root, TRAIN_OBJECTS + VAL_OBJECTS[:1], views=VIEWS, image_size=SIZE,
                                workers=1, progress=False)
    return root, first, second


@pytest.fixture(scope="module")
def pb():
    """A DIRECT pybullet connection of the test's own."""
    client = p.connect(p.DIRECT)
    yield client
    p.disconnect(client)


def _pose(xyz: str | None, rpy: str | None):
    """pybullet (position, quaternion) of a URDF <origin>."""
    pos = [float(v) for v in (xyz or "0 0 0").split()]
    return pos, p.getQuaternionFromEuler([float(v) for v in (rpy or "0 0 0").split()])


def _obj_vertices(path) -> np.ndarray:
    """Vertex positions (V, 3) of an OBJ file."""
    with open(path) as f:
        return np.array([[float(x) for x in line.split()[1:4]] for line in f if line.startswith("v ")])


def mesh_in_world(obj: int, client: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Visual-mesh vertices (V, 3) where pybullet renders them, and the AABB centre and half-diagonal.

    The URDF's visual origin is relative to the link frame; pybullet's base pose is the inertial
    (centre-of-mass) frame, so world = base_pose · inv(inertial_origin) · visual_origin · (scale · v).
    """
    urdf = synthetic.urdf_path(obj)
    link = ET.parse(urdf).getroot().find("link")
    assert link is not None and len(ET.parse(urdf).getroot().findall("link")) == 1
    body = p.loadURDF(str(urdf), [0, 0, 0], [0, 0, 0, 1], physicsClientId=client)
    base = p.getBasePositionAndOrientation(body, physicsClientId=client)
    inertial = link.find("inertial/origin")
    inertial = _pose(*(None, None) if inertial is None else (inertial.get("xyz"), inertial.get("rpy")))
    link_pose = p.multiplyTransforms(*base, *p.invertTransform(*inertial))
    out = []
    for visual in link.findall("visual"):
        mesh, origin = visual.find("geometry/mesh"), visual.find("origin")
        scale = np.array([float(s) for s in (mesh.get("scale") or "1 1 1").split()])
        pose = p.multiplyTransforms(*link_pose, *_pose(
            *(None, None) if origin is None else (origin.get("xyz"), origin.get("rpy"))))
        R = np.array(p.getMatrixFromQuaternion(pose[1])).reshape(3, 3)
        v = _obj_vertices(urdf.parent / mesh.get("filename")) * scale
        out.append(v @ R.T + np.array(pose[0]))
    centre, r = synthetic.object_frame(p, body, client)
    p.removeBody(body, physicsClientId=client)
    return np.concatenate(out), centre, r


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary dilation of an (H, W) bool mask by a (2k+1)² square."""
    padded = np.pad(mask, k)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def test_mesh_vertices_project_into_masks(dataset, pb):
    """The key test: cameras from the annotations put the real mesh where pybullet drew it."""
    root, _, _ = dataset
    ds = CO3DDataset(root, "random_objects")
    seqs = {s.name: s for s in ds.sequences("fewview_dev", "test")}
    assert sorted(seqs) == [f"obj_{o}" for o in VAL_OBJECTS]
    extra = {s["sequence_name"]: s for s in json.loads(gzip.decompress(
        (root / "random_objects" / "sequence_annotations.jgz").read_bytes()))}
    offsets = []  # signed (mask box - vertex box) per view, (x0, y0, x1, y1) in pixels
    for obj in VAL_OBJECTS:
        world, centre, r = mesh_in_world(obj, pb)
        assert np.allclose(extra[f"obj_{obj}"]["aabb_center"], centre)
        assert extra[f"obj_{obj}"]["half_diagonal"] == pytest.approx(r)
        pts = torch.from_numpy((world - centre) / r)  # (V, 3) normalised object frame
        assert pts.norm(dim=-1).max() <= 1.0
        views = ds.load(seqs[f"obj_{obj}"], RAW, dtype=torch.float64)
        assert views.images.shape == (VIEWS, 3, SIZE, SIZE)
        uv, z = views.cameras.project(pts)  # (N, V, 2), (N, V)
        assert (z > 0).all()
        for i in range(VIEWS):
            mask = views.masks[i, 0].numpy() > 0.5  # (H, W)
            assert mask.any()
            col = np.floor(uv[i, :, 0].numpy()).astype(int)
            row = np.floor(uv[i, :, 1].numpy()).astype(int)
            inside = (col >= 0) & (col < SIZE) & (row >= 0) & (row < SIZE)
            hit = np.zeros_like(inside)
            hit[inside] = _dilate(mask, 2)[row[inside], col[inside]]
            assert hit.mean() >= 0.95, f"obj {obj} view {i}: only {hit.mean():.1%} of vertices in the mask"
            # and the mask is not too big: its box matches the vertices' box (extremes are vertices)
            ys, xs = np.nonzero(mask)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            vbox = np.concatenate([uv[i].numpy().min(0), uv[i].numpy().max(0)])
            assert np.abs(box - vbox).max() <= 1.0, f"obj {obj} view {i}: mask box {box} vs vertices {vbox}"
            offsets.append(box - vbox)
    # no systematic half-pixel shift: pixels are sampled at their centres, as K says
    mean = np.array(offsets).reshape(-1, 2, 2).mean(axis=(0, 1))  # (x, y)
    assert np.abs(mean).max() < 0.2, f"mean mask-box offset {mean} px"


def test_annotations_cameras(dataset):
    """ndc_isotropic intrinsics; cameras at distance 3 with a 42° vertical FOV, world up +Z."""
    root, _, _ = dataset
    frames = json.loads(gzip.decompress((root / "random_objects" / "frame_annotations.jgz").read_bytes()))
    assert len(frames) == VIEWS * 3
    assert {f["viewpoint"]["intrinsics_format"] for f in frames} == {"ndc_isotropic"}
    ds = CO3DDataset(root, "random_objects")
    for seq in ds.sequences("fewview_dev", "test") + ds.sequences("fewview_train", "train"):
        cams = ds.load(seq, RAW, dtype=torch.float64).cameras
        assert torch.allclose(cams.centers.norm(dim=-1), torch.full((VIEWS,), 3.0, dtype=torch.float64))
        fov = 2 * torch.atan(0.5 * SIZE / cams.K[:, 1, 1])
        assert torch.allclose(torch.rad2deg(fov), torch.full((VIEWS,), 42.0, dtype=torch.float64))
        assert torch.allclose(cams.K[:, :2, 2], torch.full((VIEWS, 2), SIZE / 2, dtype=torch.float64))
        assert torch.allclose(cams.forward, -cams.centers / 3.0)  # looking at the origin
        assert (cams.up[:, 2] > 0).all() and cams.R[:, 0, 2].abs().max() < 1e-9  # no roll
        elev = torch.rad2deg(torch.asin(cams.centers[:, 2] / 3.0))
        assert ((elev >= 10 - 1e-6) & (elev <= 40 + 1e-6)).all()


def test_set_lists_and_resume(dataset):
    """Train objects only in fewview_train, val objects only in fewview_dev 'test'; calls accumulate."""
    root, first, second = dataset
    ds = CO3DDataset(root, "random_objects")
    assert ds.subsets() == ["fewview_dev", "fewview_train"]
    assert [s.name for s in ds.sequences("fewview_train", "train")] == ["obj_003"]
    lists = {name: json.loads((root / "random_objects" / "set_lists" / f"set_lists_{name}.json").read_text())
             for name in ds.subsets()}
    assert list(lists["fewview_train"]) == ["train"] and list(lists["fewview_dev"]) == ["test"]
    assert {e[0] for e in lists["fewview_dev"]["test"]} == {"obj_812", "obj_857"}
    index = json.loads((root / "category_to_subset_name_list.json").read_text())
    assert index == {"random_objects": ["fewview_dev", "fewview_train"]}
    assert (first["rendered"], first["skipped"]) == (2, 0)
    assert (second["rendered"], second["skipped"], second["sequences"]) == (1, 1, 3)
    masks = read_image(root / "random_objects/obj_003/masks/frame000000.png", "L")
    assert set(np.unique(masks)) <= {0.0, 1.0}


def test_deterministic(tmp_path):
    """Same seed: identical files; another seed: other colour and cameras."""
    kw = dict(views=3, image_size=48, workers=1, progress=False)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synthetic.generate(tmp_path / name, [805], seed=seed, **kw)
    files = [f"random_objects/obj_805/{d}/frame{i:06d}.{e}" for i in range(3)
             for d, e in (("images", "jpg"), ("masks", "png"))]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    a, c = (synthetic.object_params(805, s) for s in (0, 1))
    assert a != c and a == synthetic.object_params(805, 0)
    assert all(0.2 <= x <= 1.0 for x in a["color"])
    assert (tmp_path / "a" / files[0]).read_bytes() != (tmp_path / "c" / files[0]).read_bytes()
    ca = CO3DDataset(tmp_path / "a", "random_objects").raw_cameras(
        CO3DDataset(tmp_path / "a", "random_objects").sequences("fewview_dev", "test")[0].frames)
    cc = CO3DDataset(tmp_path / "c", "random_objects").raw_cameras(
        CO3DDataset(tmp_path / "c", "random_objects").sequences("fewview_dev", "test")[0].frames)
    assert not torch.allclose(ca[0].R, cc[0].R)
    meta = json.loads((tmp_path / "a/random_objects/obj_805/meta.json").read_text())
    assert {k: meta[k] for k in a} == a  # the draw depends on (seed, object id) only


def test_reserved_objects(tmp_path):
    """900-999 are never in the defaults and are refused unless include_reserved (which warns)."""
    default = [*synthetic.DEFAULT_SPLITS["train"], *synthetic.DEFAULT_SPLITS["val"]]
    assert default == list(range(900)) and not set(default) & set(range(900, 1000))
    with pytest.raises(UserError, match="--include-reserved"):
        synthetic.generate(tmp_path, [850, 912], progress=False)
    assert not (tmp_path / "random_objects").exists()
    with pytest.warns(UserWarning, match="reserved"):
        out = synthetic.generate(tmp_path, [912], views=2, image_size=32, workers=1,
                                 include_reserved=True, progress=False)
    assert out["rendered"] == 1
    ds = CO3DDataset(tmp_path, "random_objects")
    assert ds.subsets() == ["heldout_test"]
    assert [s.name for s in ds.sequences("heldout_test", "test")] == ["obj_912"]


def test_parse_objects():
    """Specs of ids and ranges; bad specs are user errors."""
    assert synthetic.parse_objects("812") == [812]
    assert synthetic.parse_objects("800-803, 801,5") == [5, 800, 801, 802, 803]
    assert synthetic.parse_objects("0-799,800-809") == list(range(810))
    for bad in ("", "a", "5-3", "990-1000", "-1"):
        with pytest.raises(UserError):
            synthetic.parse_objects(bad)


def test_rerender_with_other_settings(tmp_path):
    """An object rendered again with other settings is re-rendered; its stale frames go away."""
    kw = dict(image_size=32, workers=1, progress=False)
    synthetic.generate(tmp_path, [820], views=3, **kw)
    out = synthetic.generate(tmp_path, [820], views=2, **kw)
    assert out["rendered"] == 1
    frames = sorted(p.name for p in (tmp_path / "random_objects/obj_820/images").iterdir())
    assert frames == ["frame000000.jpg", "frame000001.jpg"]
    seq = CO3DDataset(tmp_path, "random_objects").sequences("fewview_dev", "test")[0]
    assert len(seq.frames) == 2
    assert synthetic.generate(tmp_path, [820], views=2, **kw)["skipped"] == 1


def test_broken_mesh_is_excluded(tmp_path):
    """Object 168's OBJ has NaN vertices: it renders nothing and is left out of the annotations."""
    kw = dict(views=2, image_size=32, workers=1, progress=False)
    with pytest.warns(UserWarning, match="168"):
        out = synthetic.generate(tmp_path, [168], **kw)
    assert out["excluded"] == [168] and out["sequences"] == 0
    out = synthetic.generate(tmp_path, [5], **kw)
    assert out["excluded"] == [] and out["sequences"] == 1 and out["skipped"] == 0
    assert [s.name for s in CO3DDataset(tmp_path, "random_objects").sequences("fewview_train", "train")] == ["obj_005"]
