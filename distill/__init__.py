"""Stage 2: the per-instance NeRF and the distillation of a prior's views into it.

The hash-grid field (torch, or tiny-cuda-nn on CUDA), its ray samplers (dense with empty-space
skipping, or nerfacc's occupancy grid), the teacher protocol a prior implements (the VLDM's is
``vldm.teacher``; ``distill`` never imports ``vldm``), the distillation and photometric loops,
and the videos, depth images and meshes a reconstruction leaves.
"""
