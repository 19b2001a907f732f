"""Autoencoder handling: SD-v1 single files load offline into the right architecture; not-a-VAE is a clear error."""

from __future__ import annotations

import re
import socket

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel
from safetensors.torch import save_file

from scenes.errors import UserError
from vldm.autoencoder import decode, encode, fit_scaling_factor, ldm_vae_config, load_vae, small_vae


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection or reach the Hub fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", refuse)


def to_ldm(sd: dict, levels: int) -> dict:
    """diffusers AutoencoderKL names -> original LDM names (written independently of diffusers' converter)."""
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for key, v in sd.items():
        n = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", n)
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", n)
        m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)", n)
        if m:
            i = levels - 1 - int(m[1])
            n = f"decoder.up.{i}.block.{m[3]}.{m[4]}" if m[2] == "resnets" else f"decoder.up.{i}.upsample.{m[4]}"
        n = re.sub(r"mid_block\.resnets\.(\d)\.", lambda mm: f"mid.block_{int(mm[1]) + 1}.", n)
        m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)$", n)
        if m:
            n = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                v = v[:, :, None, None]  # LDM attention projections are 1x1 convolutions
        out[n] = v
    return out


def _sd_file(tmp_path, vae, suffix=".safetensors", extra=True):
    ldm = {f"first_stage_model.{k}": v.contiguous() for k, v in to_ldm(vae.state_dict(), len(vae.config.block_out_channels)).items()}
    assert "first_stage_model.encoder.down.0.block.0.conv1.weight" in ldm
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in ldm
    if extra:  # the rest of a full SD checkpoint, which must be ignored
        ldm["model.diffusion_model.input_blocks.0.0.weight"] = torch.randn(8, 4, 3, 3)
        ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(7)
    path = tmp_path / f"sd{suffix}"
    if suffix == ".safetensors":
        save_file(ldm, path)
    else:
        torch.save({"state_dict": ldm, "global_step": 3}, path)
    return path


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return small_vae(**{"block_out_channels": (8, 16, 16), "layers_per_block": 1, "sample_size": 32, **kw})


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sd_layout_single_file_loads_offline_into_the_right_architecture(tmp_path, suffix):
    ref = _tiny(layers_per_block=2)
    path = _sd_file(tmp_path, ref, suffix)
    vae = load_vae(path)
    assert isinstance(vae, AutoencoderKL)
    assert list(vae.config.block_out_channels) == [8, 16, 16] and vae.config.layers_per_block == 2
    assert vae.config.latent_channels == 4 and vae.config.scaling_factor == pytest.approx(0.18215)
    got, want = vae.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ref.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean, atol=1e-6)


def test_sd_v1_shapes_give_the_sd_v1_config():
    with torch.device("meta"):
        sd_vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                               down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    cfg = ldm_vae_config(to_ldm(sd_vae.state_dict(), 4))
    assert cfg["block_out_channels"] == [128, 256, 512, 512] and cfg["layers_per_block"] == 2
    assert cfg["latent_channels"] == 4 and cfg["in_channels"] == cfg["out_channels"] == 3
    assert cfg["norm_num_groups"] == 32 and cfg["scaling_factor"] == 0.18215 and cfg["mid_block_add_attention"]
    assert cfg["down_block_types"] == ["DownEncoderBlock2D"] * 4 and cfg["sample_size"] == 256


def test_vae_only_file_without_prefix_and_diffusers_named_file(tmp_path):
    ref = _tiny()
    bare = {k: v.contiguous() for k, v in to_ldm(ref.state_dict(), 3).items()}
    save_file(bare, tmp_path / "vae_only.safetensors")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "diffusers.safetensors")
    for name in ("vae_only.safetensors", "diffusers.safetensors"):
        vae = load_vae(tmp_path / name)
        assert all(torch.equal(vae.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_diffusers_folder_round_trip(tmp_path):
    ref = _tiny()
    ref.register_to_config(scaling_factor=0.7)
    ref.save_pretrained(tmp_path / "vae")
    for path in (tmp_path / "vae", tmp_path):  # the folder itself, or a pipeline folder holding vae/
        vae = load_vae(path)
        assert vae.config.scaling_factor == 0.7 and not vae.training
        assert all(torch.equal(vae.state_dict()[k], v) for k, v in ref.state_dict().items())


class NotATensor:
    pass


def test_not_a_vae_is_a_clear_error(tmp_path):
    rand = tmp_path / "random.ckpt"
    rand.write_bytes(torch.randint(0, 255, (300,), dtype=torch.uint8).numpy().tobytes())
    bad_st = tmp_path / "random.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    unet_only = tmp_path / "unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, unet_only)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "callbacks": NotATensor()}, pickled)
    (tmp_path / "empty").mkdir()
    UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")
                ).save_pretrained(tmp_path / "unet")
    cases = [
        (rand, "is not a PyTorch checkpoint"), (bad_st, "not a readable safetensors file"),
        (unet_only, "holds no VAE weights"), (pickled, "cannot be loaded safely"),
        (tmp_path / "empty", "folder without config.json"), (tmp_path / "unet", "holds a UNet2DModel, not an AutoencoderKL"),
        (tmp_path / "missing.ckpt", "VAE not found"),
    ]
    for path, message in cases:
        with pytest.raises(UserError) as err:
            load_vae(path)
        text = str(err.value)
        assert message in text and str(path) in text and "\n" not in text, text


def test_encode_decode_shapes_range_and_scaling_factor(tmp_path):
    vae = _tiny()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        z = encode(vae, x)
        y = decode(vae, z)
    assert z.shape == (3, 4, 8, 8) and y.shape == (3, 3, 32, 32)
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, y[:1].expand_as(y))
    factor = fit_scaling_factor(vae, x)
    assert vae.config.scaling_factor == pytest.approx(factor)
    with torch.no_grad():
        assert encode(vae, x).std().item() == pytest.approx(1.0, rel=1e-4)
        # decoding undoes the scale: same images whatever the factor
        assert torch.allclose(decode(vae, encode(vae, x)), y, atol=1e-5)
    vae.save_pretrained(tmp_path / "v")
    assert AutoencoderKL.from_pretrained(tmp_path / "v").config.scaling_factor == pytest.approx(factor)


def test_small_vae_downsamples_by_four_with_three_levels():
    vae = small_vae()
    assert list(vae.config.block_out_channels) == [32, 64, 64] and vae.config.sample_size == 64
    with torch.no_grad():
        assert encode(vae, torch.rand(1, 3, 64, 64)).shape == (1, 4, 16, 16)
