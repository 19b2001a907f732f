"""The table of ``sparsefusion`` subcommands: flags, help and where each one's code lives.

Nothing here imports a command's module: :class:`Command` names its config class and functions as
``"module:attribute"`` strings, resolved only for the command that runs (``--help`` stays fast).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# Flags shared by every command that reads scenes: flag -> (config key, type, help).
DATA_FLAGS = {
    "data": ("data.root", str, "dataset root in the CO3D v2 layout"),
    "category": ("data.category", str, "category folder"),
    "subset": ("data.subset", str, "set list name (fewview_dev, fewview_train, ...)"),
    "split": ("data.split", str, "set list part (train, val, test)"),
    "views": ("data.views", int, "input views per scene"),
    "image-size": ("data.image_size", int, "square image side"),
    "max-scenes": ("data.max_scenes", int, "only the first N scenes"),
    "out": ("out", str, "output folder"),
}
TRAIN_FLAGS = {
    **{k: v for k, v in DATA_FLAGS.items() if k != "views"},
    "steps": ("train.steps", int, "optimizer steps in total"),
    "resume": ("train.resume", str, "'latest' or a checkpoint folder"),
    "init-from": ("train.init_from", str, "a saved model/ folder to start from (weights only)"),
}
DEVICE_FLAG = {"device": ("device", str, "cpu, cuda, auto")}


@dataclass(frozen=True)
class Items:
    """A list flag whose values may be space- or comma-separated (``--methods a,b c``), each read by ``kind``."""

    kind: type = str


def resolve(ref: str) -> Any:
    """The object a ``"package.module:attribute"`` string names (imports the module)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Command:
    """A subcommand: its flag shortcuts, and where its config class and functions live."""

    name: str
    help: str
    config: str  # "module:ConfigClass"
    run: str  # "module:function", called with the loaded config
    flags: dict[str, tuple[str, type | Items, str]]  # flag -> (config key, type, help)
    switches: dict[str, tuple[str, str]] | None = None  # boolean flags -> (key, help)
    default_preset: str | None = None  # "module:function": preset without --config, from the flag-only config
    plan: str | None = None  # "module:function": the first line printed, what will run
    prints_out: bool = False  # print "results in <out>" from the returned dict


COMMANDS = [
    Command("make-dataset", "render the pybullet-objects dataset in the CO3D v2 layout",
            "pipelines.tools.make_dataset:MakeDatasetConfig", "pipelines.tools.make_dataset:run",
            {"data": ("root", str, "output dataset root"),
             "objects": ("objects", str, "e.g. 800-899 or 0-799,800-899"),
             "views": ("views", int, "views per object"), "image-size": ("image_size", int, "render size"),
             "workers": ("workers", int, "parallel workers"), "seed": ("seed", int, "seed")},
            {"include-reserved": ("include_reserved", "allow the held-out objects 900-999")}),
    Command("evaluate", "evaluate a method on the shared protocol",
            "pipelines.harness.evaluate:EvaluateConfig", "pipelines.harness.evaluate:run",
            {"method": ("method", str, "method name"), **DATA_FLAGS,
             "checkpoint": ("checkpoint", str, "model folder"), **DEVICE_FLAG},
            prints_out=True),
    Command("compare", "run several methods on the same scenes; one table, image grid and turntables",
            "pipelines.harness.compare:CompareConfig", "pipelines.harness.compare:compare",
            {"methods": ("methods", Items(), "methods in table order (a b c or a,b,c)"), **DATA_FLAGS,
             "categories": ("categories", Items(), "categories (default: --category)"),
             "vldm": ("models.vldm", str, "VLDM folder (eft, vldm, sparsefusion*)"),
             "pixelnerf": ("models.pixelnerf", str, "pixelNeRF folder"), "dfm": ("models.dfm", str, "DFM folder"),
             **DEVICE_FLAG},
            prints_out=True),
    Command("reconstruct", "fit a 3D field per scene from its input views (SparseFusion, SDS or photometric)",
            "pipelines.reconstruction.reconstruct:ReconstructConfig", "pipelines.reconstruction.reconstruct:run",
            {"mode": ("mode", str, "sparsefusion, sds or photometric"), **DATA_FLAGS,
             "scene": ("scene", str, "only this sequence"),
             "images": ("images", list, "custom input: image files"),
             "cameras": ("cameras", str, "custom input: OpenCV camera JSON or transforms.json"),
             "frames": ("frames", Items(int), "custom input: these frames of the camera file (e.g. 3,17,42)"),
             "masks": ("masks", list, "custom input: mask files (default: the images' alpha)"),
             "checkpoint": ("checkpoint", str, "VLDM folder"), **DEVICE_FLAG, "seed": ("seed", int, "seed")},
            {"resume": ("resume", "skip finished scenes, continue unfinished ones from their checkpoint")},
            default_preset="pipelines.reconstruction.plan:default_preset",
            plan="pipelines.reconstruction.plan:plan_line"),
    Command("cameras", "export every frame's camera exactly as the files give it (OpenCV)",
            "pipelines.tools.cameras_export:CamerasConfig", "pipelines.tools.cameras_export:run",
            {"data": ("root", str, "dataset root"), "category": ("category", str, "category"),
             "out": ("out", str, "output JSON"), "plot": ("plot", str, "optional PNG plot of the cameras"),
             "cameras": ("cameras", str, "a camera file to validate and plot instead of a dataset")}),
    Command("demo", "the embedded demo: data, evaluation, report",
            "pipelines.tools.demo:DemoConfig", "pipelines.tools.demo:run", {"out": ("out", str, "output folder")}),
    Command("train-vae", "train the small autoencoder of the demo/tiny presets on the training frames",
            "pipelines.training.vae:TrainVAEConfig", "pipelines.training.vae:run", TRAIN_FLAGS),
    Command("train-vldm", "train the EFT and the view-conditioned latent diffusion model jointly",
            "pipelines.training.vldm:TrainVLDMConfig", "pipelines.training.vldm:run",
            {**TRAIN_FLAGS, "vae": ("model.vae", str, "autoencoder folder or SD checkpoint file")}),
    Command("train-pixelnerf", "train the pixelNeRF baseline on random ray batches",
            "pipelines.training.pixelnerf:TrainPixelNeRFConfig", "pipelines.training.pixelnerf:run", TRAIN_FLAGS),
    Command("train-dfm", "train forward-model diffusion (DFM), optionally warm-started from a pixelNeRF",
            "pipelines.training.dfm:TrainDFMConfig", "pipelines.training.dfm:run",
            {**TRAIN_FLAGS, "warm-start": ("warm_start", str, "pixelNeRF folder to start from")}),
    Command("figure", "draw an image grid of what a model does (e.g. inputs, truth, EFT, VLDM samples)",
            "pipelines.tools.figures:FigureConfig", "pipelines.tools.figures:run",
            {"kind": ("kind", str, "vldm-samples"), **DATA_FLAGS,
             "checkpoint": ("checkpoint", str, "model folder"), "out": ("out", str, "output PNG")}),
    Command("bench", "time the toolkit's hot paths (medians of repeated runs, JSON)",
            "pipelines.tools.bench:BenchConfig", "pipelines.tools.bench:run",
            {"checkpoint": ("checkpoint", str, "VLDM folder"), "out": ("out", str, "output JSON"), **DEVICE_FLAG,
             "preset": ("preset", str, "reconstruct preset of the reconstruction figure")}),
]
