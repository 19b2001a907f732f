"""``sparsefusion cameras``: the files' cameras in OpenCV form, and a plot to check a convention.

With ``--data/--category`` every annotated frame is exported exactly as the files give it (no
crop, no resize, no normalisation). With ``cameras=FILE`` a user's camera file is validated
and plotted instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from scenes.cameras import Cameras
from scenes.co3d import CO3DDataset
from scenes.custom import camera_file_frames, read_camera_file
from scenes.errors import UserError
from scenes.io import atomic_path, write_json


@dataclass
class CamerasConfig:
    """Configuration of ``sparsefusion cameras``."""

    root: str | None = None
    """Dataset root in the CO3D v2 layout."""
    category: str | None = None
    """Category whose frames are exported."""
    cameras: str | None = None
    """Instead of a dataset: a camera file (OpenCV JSON or transforms.json) to validate and plot."""
    out: str | None = "cameras.json"
    """Output JSON (OpenCV: image path, height, width, K, R, t per frame)."""
    plot: str | None = None
    """Optional PNG: camera centres and viewing directions, one panel per sequence."""
    plot_sequences: int = 4
    """Sequences shown in the plot (each CO3D sequence has its own world frame)."""


def export_dataset(root: str, category: str) -> tuple[list[dict], dict[str, Cameras]]:
    """OpenCV records of every annotated frame, and the cameras grouped per sequence."""
    ds = CO3DDataset(root, category)
    frames, per_seq = [], {}
    for seq_name, anns in ds.frames_by_sequence().items():
        cams = ds.raw_cameras(anns)
        for ann, cam in zip(anns, cams):
            frames += camera_file_frames(cam, [ann["image"]["path"]],
                                         [{"sequence": seq_name, "frame_number": ann["frame_number"]}])
        per_seq[seq_name] = Cameras(torch.cat([c.R for c in cams]), torch.cat([c.t for c in cams]),
                                    torch.cat([c.K for c in cams]), cams[0].height, cams[0].width)
    return frames, per_seq


def plot_cameras(per_seq: dict[str, Cameras], path: str | Path, max_panels: int = 4) -> None:
    """Camera centres (dots) and optical axes (arrows) around the origin, one 3D panel per sequence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(per_seq.items())[:max_panels]
    fig = plt.figure(figsize=(4.5 * len(items), 4.5))
    for k, (name, cams) in enumerate(items):
        ax = fig.add_subplot(1, len(items), k + 1, projection="3d")
        c, f, up = cams.centers.float(), cams.forward.float(), cams.up.float()
        scale = 0.25 * float((c - c.mean(0)).norm(dim=-1).mean().clamp_min(1e-3))
        ax.scatter(*c.T.numpy(), s=8, c="tab:blue", label="centres")
        ax.quiver(*c.T.numpy(), *(f * scale).T.numpy(), color="tab:red", label="optical axis (+z)")
        ax.quiver(*c.T.numpy(), *(up * scale * 0.6).T.numpy(), color="tab:green", label="image up (-y)")
        ax.scatter([0], [0], [0], marker="x", c="k", s=40, label="world origin")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_zlabel("z")
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("cameras (OpenCV: x right, y down, z forward)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run(cfg: CamerasConfig) -> None:
    """Export (dataset) or validate (camera file), then optionally plot."""
    if cfg.cameras:
        cf = read_camera_file(cfg.cameras)
        frames, per_seq = camera_file_frames(cf.cameras, cf.images), {Path(cfg.cameras).name: cf.cameras}
        print(f"{cfg.cameras}: {len(frames)} valid cameras, {cf.cameras.height}x{cf.cameras.width}")
    elif cfg.root and cfg.category:
        frames, per_seq = export_dataset(cfg.root, cfg.category)
        if cfg.out:
            write_json(cfg.out, {"convention": "opencv", "source": str(cfg.root), "category": cfg.category,
                                 "frames": frames})
            print(f"wrote {len(frames)} cameras of {len(per_seq)} sequences to {cfg.out}")
    else:
        raise UserError("give --data ROOT --category C (a dataset) or cameras=FILE (a camera file)")
    if cfg.plot:
        plot_cameras(per_seq, cfg.plot, cfg.plot_sequences)
        print(f"plot in {cfg.plot}")
