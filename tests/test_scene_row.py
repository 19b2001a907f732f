"""The one per-scene row of evaluate and reconstruct."""

import json

import torch

from pipelines.common.metrics import Unavailable
from pipelines.common.scene_row import SceneRow


def test_a_row_holds_means_per_target_values_and_unavailable_metrics_as_flat_json():
    row = SceneRow("obj_800", [3, 17], 1.5, [0, 1], {"index": 0, "unet_evaluations": 40})
    row.measure({"psnr": torch.tensor([10.0, 20.0]), "lpips": Unavailable("no weights")})
    record = json.loads(json.dumps(row.to_json()))  # JSON all the way
    assert record["scene"] == "obj_800" and record["inputs"] == [3, 17] and record["targets"] == [0, 1]
    assert record["psnr"] == 15.0 and record["per_target"] == {"psnr": [10.0, 20.0]}
    assert record["lpips"] == {"available": False, "reason": "no weights"}
    assert record["index"] == 0 and record["unet_evaluations"] == 40 and record["seconds"] == 1.5


def test_a_row_without_ground_truth_has_no_targets_or_metrics():
    record = SceneRow("mine", [0, 1], 2.0, extras={"mode": "fast"}).to_json()
    assert record == {"scene": "mine", "seconds": 2.0, "inputs": [0, 1], "mode": "fast"}
