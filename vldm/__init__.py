"""Stage 1: the Epipolar Feature Transformer and the view-conditioned latent diffusion model.

Classes are exported here so that diffusers can load a saved ``VLDMPipeline`` folder, whose
``model_index.json`` names its components as ``["vldm", "<ClassName>"]``.
"""

from .eft import EpipolarFeatureTransformer
from .pipeline import VLDMPipeline, VLDMOutput

__all__ = ["EpipolarFeatureTransformer", "VLDMPipeline", "VLDMOutput"]
