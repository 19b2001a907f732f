"""Image metrics for the evaluation harness: PSNR, foreground PSNR, SSIM, silhouette IoU, LPIPS, FID/KID.

Conventions: images are float in [0, 1], shape (B, 3, H, W); masks are (B, 1, H, W) in [0, 1].
Ground truth arrives foreground-masked on black (dataset convention); nothing here re-masks it,
since multiplying an already composited image by a soft mask again would square the mask.

Network-backed metrics never download anything. Their weights must already sit in torch hub's
checkpoint folder (``torch.hub.get_dir()/checkpoints``, the place torchvision / torch-fidelity
would download to); when a file is missing the metric is reported as ``Unavailable`` with the
reason and every other metric is still computed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

# File names are the basenames of the download URLs that torchvision / torch-fidelity use.
LPIPS_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch_fidelity URL_INCEPTION_V3
LPIPS_RANDOM_KEY = "lpips_random_backbone_UNRELIABLE"
_BACKBONE_NAMES = {"vgg": "VGG-16 ImageNet", "alex": "AlexNet ImageNet"}


@dataclass
class Unavailable:
    """A metric that cannot be computed here, with the reason."""

    reason: str

    def to_json(self) -> dict:
        return {"available": False, "reason": self.reason}


def to_jsonable(value):
    """Recursively turn metric results (tensors, Unavailable, dicts, lists) into JSON-friendly values."""
    if isinstance(value, Unavailable):
        return value.to_json()
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def checkpoint_dir() -> Path:
    """Folder torch hub downloads checkpoints to; only ever read here."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_weights_path(net: str) -> Path:
    """Local path of the ImageNet backbone weights LPIPS(net) needs."""
    return checkpoint_dir() / LPIPS_BACKBONE_FILES[net]


def lpips_weights_missing(net: str) -> str | None:
    """Why LPIPS(net) cannot run here (its backbone weights are not on disk), or None."""
    path = lpips_weights_path(net)
    if path.is_file():
        return None
    return f"{_BACKBONE_NAMES[net]} weights not found at {path}; LPIPS needs them (no download is attempted)"


def inception_weights_path() -> Path:
    """Local path of torch-fidelity's Inception-v3 (FID/KID) weights."""
    return checkpoint_dir() / INCEPTION_FILE


def mask_on_black(img: Tensor, mask: Tensor) -> Tensor:
    """Composite (B,3,H,W) on black with a (B,1,H,W) mask -> (B,3,H,W)."""
    return img * mask


def _weighted_psnr(pred: Tensor, gt: Tensor, w: Tensor) -> Tensor:
    w = w.to(pred.dtype).expand_as(pred)
    mse = (w * (pred - gt) ** 2).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def psnr(pred: Tensor, gt: Tensor, valid: Tensor | None = None) -> Tensor:
    """PSNR (dB) over the valid region: (B,3,H,W), (B,3,H,W), (B,1,H,W)|None -> (B,)."""
    return _weighted_psnr(pred, gt, torch.ones_like(pred[:, :1]) if valid is None else valid)


def psnr_fg(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """Foreground PSNR, MSE weighted by the gt mask (CO3D psnr_fg): (B,3,H,W)x2, (B,1,H,W) -> (B,).

    The mask is used as given (soft weights); CO3D binarises it first (pass ``(mask >= 0.5)``).
    """
    return _weighted_psnr(pred, gt, mask)


OPACITY_THRESHOLD = 0.5  # a rendered pixel belongs to the silhouette when its opacity exceeds this
IMAGE_THRESHOLD = 0.1  # ... or, for a method without opacity, when any channel exceeds this (black background)
MASK_THRESHOLD = 0.5  # ground-truth foreground: mask above this


def silhouette(pred: Tensor, opacity: Tensor | None = None) -> Tensor:
    """Predicted silhouette (B,1,H,W) bool: opacity > 0.5 when given, else any channel of pred (B,3,H,W) > 0.1."""
    if opacity is not None:
        return opacity > OPACITY_THRESHOLD
    return (pred > IMAGE_THRESHOLD).any(dim=1, keepdim=True)


def _gt_and_inside(mask: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """The gt silhouette (mask > 0.5) and the valid region (> 0.5; everywhere when not given), bool."""
    gt = mask > MASK_THRESHOLD
    return gt, (torch.ones_like(gt) if valid is None else valid > 0.5)


def silhouette_iou(pred_silhouette: Tensor, mask: Tensor, valid: Tensor | None = None) -> Tensor:
    """IoU of a predicted silhouette (B,1,H,W) bool with the gt mask > 0.5 over the valid region (> 0.5) -> (B,).

    An image where both are empty scores 1.
    """
    gt, inside = _gt_and_inside(mask, valid)
    inter = (pred_silhouette & gt & inside).flatten(1).sum(1).float()
    union = ((pred_silhouette | gt) & inside).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def silhouette_area_ratio(pred_silhouette: Tensor, mask: Tensor, valid: Tensor | None = None) -> Tensor:
    """Predicted silhouette area over the gt mask's (> 0.5), both inside the valid region -> (B,).

    1 means the right size; a sample that shrinks the object scores below 1. An empty gt counts as
    one pixel, so the ratio stays finite.
    """
    gt, inside = _gt_and_inside(mask, valid)
    pred_area = (pred_silhouette & inside).flatten(1).sum(1).float()
    return pred_area / (gt & inside).flatten(1).sum(1).float().clamp_min(1)


def ssim(pred: Tensor, gt: Tensor) -> Tensor:
    """SSIM, Gaussian window 11, sigma 1.5, data range 1: (B,3,H,W), (B,3,H,W) -> (B,).

    Reflect-padded "same" SSIM map averaged over all pixels and channels, i.e. torchmetrics'
    structural_similarity_index_measure since v1.5 (earlier versions cropped a 5-pixel border;
    implemented here so results do not depend on the installed torchmetrics version).
    """
    c1, c2, k, sigma = 0.01**2, 0.03**2, 11, 1.5
    r = torch.arange(k, dtype=pred.dtype, device=pred.device) - (k - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    c = pred.shape[1]
    win = (g[:, None] * g[None, :]).expand(c, 1, k, k)
    x = torch.nn.functional.pad(torch.cat([pred, gt]), (k // 2,) * 4, mode="reflect")
    mu = torch.nn.functional.conv2d(torch.cat([x, x * x]), win, groups=c)
    mx, my, exx, eyy = mu.chunk(4)
    exy = torch.nn.functional.conv2d(x[: len(pred)] * x[len(pred):], win, groups=c)
    vx, vy = (exx - mx**2).clamp_min(0), (eyy - my**2).clamp_min(0)
    s = ((2 * mx * my + c1) * (2 * (exy - mx * my) + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def load_lpips(net: str, device, random_backbone: bool):
    """LPIPS model built without any download; backbone from the local file unless random."""
    import lpips

    with warnings.catch_warnings():  # torchvision's deprecated `pretrained=` path used by lpips
        warnings.simplefilter("ignore")
        # pnet_rand=True: torchvision builds the backbone without fetching weights; the linear
        # heads come from the lpips package itself.
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    if not random_backbone:
        sd = torch.load(lpips_weights_path(net), map_location="cpu", weights_only=True)
        wanted = {k for k in sd if k.startswith("features.")}
        loaded = set()
        for i in range(1, model.net.N_slices + 1):  # slice children are named by features index
            for name, module in getattr(model.net, f"slice{i}").named_children():
                own = {k: sd[f"features.{name}.{k}"] for k, _ in module.named_parameters()}
                module.load_state_dict(own, strict=True)
                loaded |= {f"features.{name}.{k}" for k in own}
        if loaded != wanted:
            raise RuntimeError(f"LPIPS backbone weights mismatch: unused {sorted(wanted - loaded)}")
    return model.eval().requires_grad_(False).to(device)


def perceptual_loss(net: str = "vgg", device="cpu") -> tuple[object | None, str]:
    """Differentiable LPIPS for training, images (B,3,H,W) in [0,1] -> (B,); (None, reason) without weights."""
    missing = lpips_weights_missing(net)
    if missing:
        return None, f"{missing}; the perceptual term is off"
    model = load_lpips(net, device, random_backbone=False)
    return (lambda a, b: model(a, b, normalize=True).flatten()), "ok"


class _Identity(torch.nn.Module):
    """Feature passthrough, so FID and KID share one Inception forward pass."""

    num_features = 2048

    def forward(self, x: Tensor) -> Tensor:
        return x


class MetricSuite:
    """All evaluation metrics, built once by the harness; network models load lazily and are cached.

    ``lpips_backbone_random=True`` is ONLY for wiring tests: its values go under
    ``LPIPS_RANDOM_KEY`` and ``lpips`` itself is reported Unavailable.
    """

    def __init__(self, lpips_net: str = "vgg", device="cpu", fid: bool = True,
                 lpips_backbone_random: bool = False, kid_subset_size: int = 1000):
        if lpips_net not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"lpips_net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {lpips_net!r}")
        self.lpips_net, self.device, self.fid = lpips_net, torch.device(device), fid
        self.lpips_backbone_random = lpips_backbone_random
        self.kid_subset_size = kid_subset_size
        self._lpips = None
        self._inception = self._fid_metric = self._kid_metric = None
        self._n_set = 0

    # ---- availability -------------------------------------------------------------------
    def _lpips_reason(self) -> str | None:
        if self.lpips_backbone_random:
            return f"random-backbone LPIPS (wiring tests only); see {LPIPS_RANDOM_KEY}, never report it"
        return lpips_weights_missing(self.lpips_net)

    def _set_reason(self) -> str | None:
        if not self.fid:
            return "FID/KID disabled (fid=False)"
        path = inception_weights_path()
        if not path.is_file():
            return (f"torch-fidelity Inception-v3 weights not found at {path}; "
                    "FID/KID need them (no download is attempted)")
        return None

    def availability(self) -> dict[str, str]:
        """Metric name -> "ok" or the reason it cannot be computed."""
        out = {"psnr": "ok", "psnr_fg": "ok", "ssim": "ok", "silhouette_iou": "ok", "silhouette_area": "ok"}
        lp = self._lpips_reason()
        out["lpips"] = lp or "ok"
        if self.lpips_backbone_random:
            out[LPIPS_RANDOM_KEY] = "ok (random backbone; wiring only, not LPIPS)"
        st = self._set_reason()
        out["fid"] = out["kid"] = st or "ok"
        return out

    @property
    def collects_set(self) -> bool:
        """Whether update_set does anything (FID/KID enabled and their weights present)."""
        return self._set_reason() is None

    # ---- per image ----------------------------------------------------------------------
    def _lpips_model(self):
        if self._lpips is None:
            self._lpips = load_lpips(self.lpips_net, self.device, self.lpips_backbone_random)
        return self._lpips

    @torch.no_grad()
    def per_image(self, pred: Tensor, gt: Tensor, mask: Tensor, valid: Tensor | None = None,
                  opacity: Tensor | None = None) -> dict[str, Tensor | Unavailable]:
        """Per-image metrics, each a (B,) tensor on CPU or an Unavailable.

        pred (B,3,H,W) as rendered (on black); gt (B,3,H,W) already masked on black;
        mask (B,1,H,W) gt foreground; valid (B,1,H,W) region for psnr and the silhouette IoU
        (default all); opacity (B,1,H,W) the method's rendered opacity, when it has one.
        """
        pred = pred.to(self.device, torch.float32).clamp(0, 1)
        gt = gt.to(self.device, torch.float32)
        mask = mask.to(self.device, torch.float32)
        valid = None if valid is None else valid.to(self.device, torch.float32)
        opacity = None if opacity is None else opacity.to(self.device, torch.float32)
        out: dict[str, Tensor | Unavailable] = {
            "psnr": psnr(pred, gt, valid), "psnr_fg": psnr_fg(pred, gt, mask), "ssim": ssim(pred, gt),
        }
        sil = silhouette(pred, opacity)
        out["silhouette_iou"] = silhouette_iou(sil, mask, valid)
        out["silhouette_area"] = silhouette_area_ratio(sil, mask, valid)
        reason = self._lpips_reason()
        if reason is None or self.lpips_backbone_random:
            value = self._lpips_model()(pred * 2 - 1, gt * 2 - 1).flatten()
            out[LPIPS_RANDOM_KEY if self.lpips_backbone_random else "lpips"] = value
        out.setdefault("lpips", Unavailable(reason or ""))
        return {k: v.cpu() if isinstance(v, Tensor) else v for k, v in out.items()}

    # ---- set metrics --------------------------------------------------------------------
    def _ensure_set_metrics(self) -> None:
        if self._inception is not None:
            return
        from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
        from torchmetrics.image.kid import KernelInceptionDistance

        self._inception = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"],
            feature_extractor_weights_path=str(inception_weights_path())).to(self.device)
        self._fid_metric = FrechetInceptionDistance(feature=_Identity()).to(self.device)
        with warnings.catch_warnings():  # "KID saves all features in a buffer": expected, 2048 floats/image
            warnings.simplefilter("ignore", UserWarning)
            self._kid_metric = KernelInceptionDistance(feature=_Identity(), subset_size=self.kid_subset_size)
        self._kid_metric = self._kid_metric.to(self.device)

    @torch.no_grad()
    def update_set(self, pred: Tensor, gt: Tensor) -> None:
        """Accumulate Inception features of predictions (fake) and targets (real) for FID/KID."""
        if self._set_reason() is not None:
            return
        self._ensure_set_metrics()
        for imgs, real in ((gt, True), (pred, False)):
            u8 = (imgs.to(self.device, torch.float32).clamp(0, 1) * 255).to(torch.uint8)  # as torchmetrics' normalize
            feats = self._inception(u8).double()
            self._fid_metric.update(feats, real=real)
            self._kid_metric.update(feats, real=real)
        self._n_set += pred.shape[0]

    def set_metrics(self) -> dict[str, float | Unavailable]:
        """FID and KID (mean, plus kid_std) over everything passed to update_set."""
        reason = self._set_reason()
        if reason is None and self._n_set < 2:
            reason = f"FID/KID need at least 2 images per set, got {self._n_set}"
        if reason is not None:
            return {"fid": Unavailable(reason), "kid": Unavailable(reason)}
        # KID's subset size may not exceed the number of images.
        self._kid_metric.subset_size = min(self.kid_subset_size, self._n_set)
        kid_mean, kid_std = self._kid_metric.compute()
        return {"fid": float(self._fid_metric.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
                "kid_subset_size": self._kid_metric.subset_size}

    def reset_set(self) -> None:
        """Forget accumulated FID/KID features (keeps the loaded Inception)."""
        if self._fid_metric is not None:
            self._fid_metric.reset()
            self._kid_metric.reset()
        self._n_set = 0


def summarize(rows: list[dict]) -> dict:
    """Mean of each metric over rows (e.g. per-scene dicts); Unavailable values are skipped.

    A metric with no numeric value at all stays Unavailable with its (first) reason; a metric that
    was unavailable in only some rows gets its mean plus ``<name>_n`` and ``<name>_skipped`` notes.
    Tensors are averaged over their elements first (per-image tensors -> per-row mean).
    """
    values: dict[str, list[float]] = {}
    reasons: dict[str, list[str]] = {}
    for row in rows:
        for key, v in row.items():
            if isinstance(v, Unavailable):
                reasons.setdefault(key, []).append(v.reason)
                values.setdefault(key, [])
                continue
            if isinstance(v, Tensor):
                v = v.float().mean().item()
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            values.setdefault(key, []).append(float(v))
    out: dict = {}
    for key, vals in values.items():
        if not vals:
            out[key] = Unavailable(reasons[key][0])
            continue
        out[key] = sum(vals) / len(vals)
        if key in reasons:
            out[f"{key}_n"] = len(vals)
            out[f"{key}_skipped"] = f"{len(reasons[key])} unavailable: {reasons[key][0]}"
    return out


__all__ = [
    "Unavailable", "MetricSuite", "psnr", "psnr_fg", "ssim", "silhouette", "silhouette_area_ratio", "silhouette_iou", "summarize", "to_jsonable", "mask_on_black",
    "checkpoint_dir", "lpips_weights_path", "inception_weights_path", "LPIPS_RANDOM_KEY",
]
