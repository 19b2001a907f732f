"""Files a reconstruction leaves behind: videos, 16-bit depth images, and a mesh by marching cubes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from scenes.io import atomic_path
from scenes.render import BOX_HALF_SIZE



def to_uint8(images: Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> uint8 array (N, H, W, C)."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def depth_to_uint16(depth: Tensor, opacity: Tensor, far: float) -> np.ndarray:
    """Depth (N, 1, H, W) in scene units -> uint16 millimetre-style image (0 = background), (N, H, W).

    Values are depth / far · 65535, where the opacity is above 0.5; 0 elsewhere.
    """
    d = (depth / far).clamp(0, 1) * 65535
    d = torch.where(opacity > 0.5, d, torch.zeros_like(d))
    return d[:, 0].round().to(torch.int32).cpu().numpy().astype(np.uint16)


def write_videos(frames: np.ndarray, mp4: Path | None, gif: Path | None, fps: int = 20) -> None:
    """Write uint8 frames (N, H, W, 3) as an MP4 (libx264) and/or a looping GIF, atomically."""
    import imageio.v2 as imageio

    if mp4 is not None:
        with atomic_path(mp4) as tmp:
            # macro_block_size 1: small renders (64²) need no padding to multiples of 16
            imageio.mimwrite(tmp, list(frames), fps=fps, format="FFMPEG", codec="libx264",
                             macro_block_size=1, quality=8, ffmpeg_log_level="error")
    if gif is not None:
        with atomic_path(gif) as tmp:
            imageio.mimwrite(tmp, list(frames), format="GIF", duration=1000 / fps, loop=0)


@torch.no_grad()
def density_grid(field: nn.Module, resolution: int, half_size: float, chunk: int = 65536) -> Tensor:
    """Density (r, r, r) at the cell centres of a regular grid over [-h, h]³, indexed [x, y, z]."""
    dev = next(field.parameters()).device
    axis = (torch.arange(resolution, device=dev) + 0.5) / resolution * 2 * half_size - half_size
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    out = torch.cat([field.density(pts[i:i + chunk]) for i in range(0, len(pts), chunk)])
    return out.reshape(resolution, resolution, resolution)


@torch.no_grad()
def extract_mesh(field: nn.Module, resolution: int = 128, threshold: float = 10.0,
                 half_size: float = BOX_HALF_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes on the density grid at ``threshold``: vertices (V, 3), faces (F, 3), colours (V, 3) uint8.

    Vertices are in the field's (normalised) frame; colours are the field's colour at each vertex.
    An empty level set gives empty arrays.
    """
    from skimage.measure import marching_cubes

    sigma = density_grid(field, resolution, half_size).cpu().numpy()
    if not (sigma.min() < threshold < sigma.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8)
    cell = 2 * half_size / resolution
    verts, faces, _, _ = marching_cubes(sigma, level=threshold, spacing=(cell, cell, cell))
    verts = verts + (cell / 2 - half_size)  # grid index 0 is the first cell centre
    # skimage orients faces for a function increasing outwards; density increases inwards
    faces = faces[:, ::-1].copy()
    v = torch.from_numpy(verts.astype(np.float32)).to(next(field.parameters()).device)
    rgb = torch.cat([field(v[i:i + 65536])[0] for i in range(0, len(v), 65536)])
    colours = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    return verts.astype(np.float32), faces.astype(np.int64), colours


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray | None = None) -> None:
    """Binary little-endian PLY with float vertices, optional uchar colours and int triangle faces."""
    V, F = len(vertices), len(faces)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {V}",
              "property float x", "property float y", "property float z"]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colours is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        fields += [("r", "u1"), ("g", "u1"), ("b", "u1")]
    header += [f"element face {F}", "property list uchar int vertex_indices", "end_header"]
    vert = np.empty(V, dtype=fields)
    vert["x"], vert["y"], vert["z"] = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    if colours is not None:
        vert["r"], vert["g"], vert["b"] = colours[:, 0], colours[:, 1], colours[:, 2]
    face = np.empty(F, dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, faces
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(vert.tobytes())
            f.write(face.tobytes())

