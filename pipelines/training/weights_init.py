"""A weights-only start from a saved ``model/`` folder (``train.init_from``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from scenes.errors import UserError


def init_from_model(folder: str | Path, parts: dict[str, nn.Module]) -> None:
    """Copy the weights of a saved model folder into ``parts`` (subfolder name -> module; '' = the folder itself).

    Weights only: each part's ``*.safetensors`` must match the module's parameters and buffers
    exactly (same architecture), else one clear error names the first difference.
    """
    from safetensors.torch import load_file

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"train.init_from={str(folder)!r} is not a folder (give a saved model/ folder)")
    for sub, module in parts.items():
        where = root / sub if sub else root
        files = sorted(where.glob("*.safetensors"))
        if not files:
            raise UserError(f"train.init_from: no *.safetensors weights in {where} (expected a saved model/ folder)")
        state = {}
        for f in files:
            state.update(load_file(f))
        own = module.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                     else f"{shapes[0]} is {tuple(state[shapes[0]].shape)}, the model's {tuple(own[shapes[0]].shape)}")
            raise UserError(f"train.init_from: {where} holds another architecture than this config builds ({first}); "
                            "use the config the model was trained with")
        module.load_state_dict(state)
    print(f"initialised from {root} (weights only)")
