"""Metrics: closed-form PSNR cases, SSIM against a direct implementation, offline LPIPS/FID/KID handling."""

import json

import pytest
import torch
import torch.nn.functional as F

from pipelines.common import metrics as M
from pipelines.common.metrics import LPIPS_RANDOM_KEY, MetricSuite, Unavailable, psnr, psnr_fg, ssim, summarize

D = torch.float64


def _imgs(b=2, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(b, 3, h, w, generator=g, dtype=D)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Empty checkpoint folder, and any attempt to download fails the test."""
    monkeypatch.setattr(M, "checkpoint_dir", lambda: tmp_path)
    _forbid_downloads(monkeypatch)
    return tmp_path


def _forbid_downloads(monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    import torchvision.models._api as tv_api

    def boom(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", boom)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", boom)


# ---- PSNR ---------------------------------------------------------------------------------
def test_psnr_constant_error_is_20db_per_image():
    gt = _imgs()
    pred = gt.clone()
    pred[0] += 0.1  # mse 1e-2 -> 20 dB
    pred[1] += 0.01  # mse 1e-4 -> 40 dB
    out = psnr(pred, gt)
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([20.0, 40.0], dtype=D), atol=1e-9, rtol=0)
    assert psnr(gt, gt).min() >= 99.0  # mse clamped at 1e-10 -> 100 dB, not inf


def test_psnr_valid_region_ignores_invalid_part():
    gt = _imgs()
    pred = gt + 0.1
    pred[..., :16] = 1.0 - gt[..., :16]  # garbage in the left half
    valid = torch.zeros(2, 1, 32, 32, dtype=D)
    valid[..., 16:] = 1
    torch.testing.assert_close(psnr(pred, gt, valid), torch.full((2,), 20.0, dtype=D))
    assert (psnr(pred, gt) < 19.0).all()


def test_psnr_fg_ignores_background():
    gt = _imgs()
    mask = torch.zeros(2, 1, 32, 32, dtype=D)
    mask[..., 8:24, 8:24] = 1
    pred = gt + 0.1
    fg, full = psnr_fg(pred, gt, mask), psnr(pred, gt)
    torch.testing.assert_close(fg, torch.full((2,), 20.0, dtype=D))
    pred2 = torch.where(mask.bool(), pred, torch.rand_like(pred))  # change background only
    torch.testing.assert_close(psnr_fg(pred2, gt, mask), fg)
    assert (psnr(pred2, gt) < full - 1.0).all()


def test_psnr_fg_soft_mask_weights():
    gt = torch.zeros(1, 3, 2, 1, dtype=D)
    pred = gt.clone()
    pred[..., 0, 0] = 0.1
    pred[..., 1, 0] = 0.3
    mask = torch.tensor([0.75, 0.25], dtype=D).view(1, 1, 2, 1)
    mse = 0.75 * 0.01 + 0.25 * 0.09
    torch.testing.assert_close(psnr_fg(pred, gt, mask), torch.tensor([-10 * torch.log10(torch.tensor(mse)).item()], dtype=D))


# ---- SSIM ---------------------------------------------------------------------------------
def _ssim_reference(x, y, k=11, sigma=1.5):
    """Direct SSIM (Wang et al. 2004), reflect-padded window, constants for data range 1."""
    c1, c2 = 0.01**2, 0.03**2
    r = torch.arange(k, dtype=D) - (k - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(3, 1, k, k)

    def f(z):
        return F.conv2d(F.pad(z, (k // 2,) * 4, mode="reflect"), win, groups=3)

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def test_ssim_identity_noise_and_reference():
    gt = _imgs(h=48, w=40)
    assert ssim(gt, gt).shape == (2,)
    torch.testing.assert_close(ssim(gt, gt), torch.ones(2, dtype=D))
    g = torch.Generator().manual_seed(1)
    noisy = (gt + 0.05 * torch.randn(gt.shape, generator=g, dtype=D)).clamp(0, 1)
    noisier = gt.clone()
    noisier[1] = (gt[1] + 0.2 * torch.randn(gt[1].shape, generator=g, dtype=D)).clamp(0, 1)
    noisier[0] = noisy[0]
    s = ssim(noisy, gt)
    assert (s < 0.99).all()
    assert ssim(noisier, gt)[1] < s[1]  # per-image values, not a batch mean
    torch.testing.assert_close(s, _ssim_reference(noisy, gt), atol=1e-5, rtol=0)
    a, b = torch.rand(2, 3, 40, 40, generator=g, dtype=D), torch.rand(2, 3, 40, 40, generator=g, dtype=D)
    torch.testing.assert_close(ssim(a, b), _ssim_reference(a, b), atol=1e-5, rtol=0)
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    tm = tm_ssim(a.float(), b.float(), gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, reduction="none")
    torch.testing.assert_close(ssim(a.float(), b.float()), tm, atol=1e-5, rtol=0)


def test_ssim_sees_the_image_border():
    gt = _imgs(h=40, w=40)
    pred = gt.clone()
    pred[..., 0, :] = 0  # differs only in the outermost row
    assert (ssim(pred, gt) < 0.999).all()


# ---- silhouette IoU -----------------------------------------------------------------------
def _sil_case():
    """2x3 images: gt mask > 0.5 at [[1, 0, 1], [0, 1, 1]]; the last pixel outside the valid region."""
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.6]]).reshape(1, 1, 2, 3)
    valid = torch.tensor([[1.0, 1, 1], [1, 1, 0]]).reshape(1, 1, 2, 3)
    return mask, valid


def test_silhouette_iou_from_opacity_by_hand():
    mask, valid = _sil_case()
    opacity = torch.tensor([[0.9, 0.6, 0.2], [0.5, 0.7, 0.0]]).reshape(1, 1, 2, 3)  # > 0.5: [[1, 1, 0], [0, 1, 0]]
    sil = M.silhouette(torch.zeros(1, 3, 2, 3), opacity)
    assert sil.flatten().tolist() == [True, True, False, False, True, False]
    # valid: intersection {(0,0), (1,1)} = 2, union {(0,0), (0,1), (0,2), (1,1)} = 4
    assert M.silhouette_iou(sil, mask, valid).tolist() == [0.5]
    assert M.silhouette_iou(sil, mask).tolist() == [pytest.approx(2 / 5)]  # (1,2) counts without the valid region


def test_silhouette_iou_of_an_image_is_any_channel_above_a_tenth():
    mask, _ = _sil_case()
    img = torch.zeros(1, 3, 2, 3)
    img[0, :, 0, 0] = torch.tensor([0.05, 0.05, 0.2])  # yes
    img[0, :, 0, 1] = 0.1  # no: not above 0.1
    img[0, 0, 1, 0] = 0.3  # yes
    img[0, 1, 1, 1] = 0.11  # yes
    sil = M.silhouette(img)
    assert sil.flatten().tolist() == [True, False, False, True, True, False]
    # intersection {(0,0), (1,1)} = 2, union {(0,0), (0,2), (1,0), (1,1), (1,2)} = 5
    assert M.silhouette_iou(sil, mask).tolist() == [pytest.approx(0.4)]
    empty = torch.zeros(1, 1, 2, 3)
    assert M.silhouette_iou(M.silhouette(torch.zeros(1, 3, 2, 3)), empty).tolist() == [1.0]  # both empty


def test_silhouette_area_ratio_by_hand():
    mask, valid = _sil_case()
    opacity = torch.tensor([[0.9, 0.6, 0.2], [0.5, 0.7, 0.0]]).reshape(1, 1, 2, 3)
    sil = M.silhouette(torch.zeros(1, 3, 2, 3), opacity)  # [[1, 1, 0], [0, 1, 0]]
    # valid region: predicted 3 pixels, gt mask {(0,0), (0,2), (1,1)} = 3 -> 1; without it gt has 4
    assert M.silhouette_area_ratio(sil, mask, valid).tolist() == [1.0]
    assert M.silhouette_area_ratio(sil, mask).tolist() == [pytest.approx(3 / 4)]
    shrunk = torch.zeros_like(sil)
    shrunk[0, 0, 0, 0] = True
    assert M.silhouette_area_ratio(shrunk, mask, valid).tolist() == [pytest.approx(1 / 3)]
    empty = torch.zeros(1, 1, 2, 3)
    assert M.silhouette_area_ratio(shrunk, empty).tolist() == [1.0]  # no gt: the predicted pixel count, over 1


def test_metric_suite_uses_opacity_when_a_method_renders_it(no_weights):
    def big(x):  # the 2x3 case in the corner of a 16x16 image (SSIM needs the room) whose rest is not valid
        return F.pad(x, (0, 13, 0, 14))

    mask, valid = map(big, _sil_case())
    opacity = big(torch.tensor([[0.9, 0.6, 0.2], [0.5, 0.7, 0.0]]).reshape(1, 1, 2, 3))
    suite = MetricSuite(fid=False)
    gt = torch.zeros(1, 3, 16, 16)
    white = torch.ones(1, 3, 16, 16)  # as an image, every pixel is silhouette: IoU 3/5 in the valid region
    assert suite.per_image(white, gt, mask, valid)["silhouette_iou"].tolist() == [pytest.approx(3 / 5)]
    assert suite.per_image(white, gt, mask, valid, opacity)["silhouette_iou"].tolist() == [0.5]
    assert suite.availability()["silhouette_iou"] == "ok"
    assert suite.per_image(white, gt, mask, valid, opacity)["silhouette_area"].tolist() == [1.0]


# ---- LPIPS --------------------------------------------------------------------------------
def test_lpips_unavailable_without_weights_other_metrics_computed(no_weights):
    suite = MetricSuite()  # VGG by default
    gt = _imgs().float()
    mask = torch.ones(2, 1, 32, 32)
    out = suite.per_image(gt + 0.1, gt, mask)
    assert isinstance(out["lpips"], Unavailable)
    expected = str(no_weights / "vgg16-397923af.pth")
    assert expected in out["lpips"].reason and "no download" in out["lpips"].reason
    assert suite.availability()["lpips"] == out["lpips"].reason
    for key in ("psnr", "psnr_fg", "ssim"):
        assert isinstance(out[key], torch.Tensor) and out[key].shape == (2,)
        assert torch.isfinite(out[key]).all()
    torch.testing.assert_close(out["psnr"], torch.full((2,), 20.0), atol=1e-3, rtol=0)
    assert "alexnet-owt-7be5be79.pth" in MetricSuite(lpips_net="alex").availability()["lpips"]


def test_lpips_random_backbone_is_flagged_and_wired(no_weights):
    suite = MetricSuite(lpips_net="alex", lpips_backbone_random=True)
    gt = _imgs(h=64, w=64).float()
    mask = torch.ones(2, 1, 64, 64)
    same = suite.per_image(gt, gt, mask)
    diff = suite.per_image((gt + 0.2).clamp(0, 1), gt, mask)
    assert isinstance(same["lpips"], Unavailable) and isinstance(diff["lpips"], Unavailable)
    assert LPIPS_RANDOM_KEY != "lpips" and "UNRELIABLE" in LPIPS_RANDOM_KEY
    assert same[LPIPS_RANDOM_KEY].shape == (2,)
    torch.testing.assert_close(same[LPIPS_RANDOM_KEY], torch.zeros(2), atol=1e-6, rtol=0)
    assert (diff[LPIPS_RANDOM_KEY] > 1e-4).all()
    assert suite._lpips is suite._lpips_model()  # built once, cached
    assert summarize([diff])["lpips"].reason == diff["lpips"].reason


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchvision `pretrained=` deprecation inside lpips
def test_lpips_loads_local_backbone_without_download(no_weights, monkeypatch):
    """With a (fake, random) AlexNet file in the checkpoint folder it is loaded, never downloaded."""
    import torchvision

    full = torchvision.models.alexnet(weights=None).state_dict()  # same key layout as the real file
    sd = {k: v for k, v in full.items() if k.startswith("features.")}
    torch.save(sd, no_weights / "alexnet-owt-7be5be79.pth")
    suite = MetricSuite(lpips_net="alex")
    assert suite.availability()["lpips"] == "ok"
    gt = _imgs(h=64, w=64).float()
    out = suite.per_image(gt, gt, torch.ones(2, 1, 64, 64))
    assert out["lpips"].shape == (2,) and LPIPS_RANDOM_KEY not in out
    net = suite._lpips.net
    torch.testing.assert_close(net.slice1[0].weight, sd["features.0.weight"])
    torch.testing.assert_close(net.slice5._modules["10"].bias, sd["features.10.bias"])
    # Same numbers as the lpips package itself would give had torchvision fetched these weights.
    import lpips
    import torchvision.models._api as tv_api

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: full)
    ref = lpips.LPIPS(net="alex", verbose=False).eval()
    other = (gt.flip(-1) * 0.8).clamp(0, 1)
    got = suite.per_image(other, gt, torch.ones(2, 1, 64, 64))["lpips"]
    with torch.no_grad():
        expected = ref(other * 2 - 1, gt * 2 - 1).flatten()
    assert (expected > 1e-4).all()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


# ---- FID / KID ----------------------------------------------------------------------------
def test_fid_kid_unavailable_without_weights(no_weights):
    suite = MetricSuite()
    gt = _imgs(b=3).float()
    suite.update_set(gt, gt)  # must not try to build/download Inception
    res = suite.set_metrics()
    for key in ("fid", "kid"):
        assert isinstance(res[key], Unavailable)
        assert str(no_weights / "weights-inception-2015-12-05-6726825d.pth") in res[key].reason
    assert suite.availability()["fid"] == res["fid"].reason
    assert isinstance(MetricSuite(fid=False).set_metrics()["fid"], Unavailable)


def test_fid_kid_wiring_with_local_weights_file(no_weights, monkeypatch):
    """With the weights file present, Inception is built from that path (never a URL); one feature
    pass feeds both FID and KID, and KID's subset size is clipped to the number of images."""
    import torchmetrics.image.fid as tm_fid

    built = []

    class FakeInception(torch.nn.Module):  # cheap stand-in: pixels as features
        def __init__(self, name, features_list, feature_extractor_weights_path=None, antialias=True):
            super().__init__()
            built.append(feature_extractor_weights_path)

        def forward(self, x):
            assert x.dtype == torch.uint8
            return x.flatten(1)[:, :64].double() / 255

    monkeypatch.setattr(tm_fid, "NoTrainInceptionV3", FakeInception)
    monkeypatch.setattr(M._Identity, "num_features", 64)  # 2048-d FID's matrix sqrt is slow on CPU
    (no_weights / M.INCEPTION_FILE).write_bytes(b"")
    suite = MetricSuite()
    assert suite.availability()["fid"] == suite.availability()["kid"] == "ok"
    gt = _imgs(b=3, h=32, w=32, seed=3).float()
    suite.update_set(gt, gt)
    same = suite.set_metrics()
    assert same["kid_subset_size"] == 3  # default 1000 clipped to 3 images
    suite.reset_set()
    suite.update_set(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)), gt)
    diff = suite.set_metrics()
    assert built == [str(no_weights / M.INCEPTION_FILE)]  # built once, from the local file
    assert abs(same["fid"]) < 1e-3 * diff["fid"] and diff["fid"] > 1.0
    assert diff["kid"] > same["kid"] + 1e-3  # unbiased KID of identical sets is not exactly 0
    suite.reset_set()
    suite.update_set(gt[:1], gt[:1])
    assert "at least 2" in suite.set_metrics()["fid"].reason


# ---- summaries / JSON ---------------------------------------------------------------------
def test_summarize_skips_unavailable_and_keeps_reason():
    why = "VGG-16 ImageNet weights not found at /x/vgg16-397923af.pth"
    rows = [
        {"scene": "a", "psnr": torch.tensor([20.0, 22.0]), "lpips": Unavailable(why), "fid": 3.0},
        {"scene": "b", "psnr": 25.0, "lpips": Unavailable(why), "fid": Unavailable("too few images")},
    ]
    s = summarize(rows)
    assert s["psnr"] == pytest.approx(23.0)  # mean(21, 25)
    assert isinstance(s["lpips"], Unavailable) and s["lpips"].reason == why
    assert s["fid"] == 3.0 and s["fid_n"] == 1 and "too few images" in s["fid_skipped"]
    assert "scene" not in s
    j = json.loads(json.dumps(M.to_jsonable(s)))
    assert j["lpips"] == {"available": False, "reason": why}
    assert j["psnr"] == pytest.approx(23.0)
