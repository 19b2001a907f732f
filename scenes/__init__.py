"""The shared data and geometry layer.

Cameras and their conventions, the CO3D v2 and custom-camera readers, the synthetic dataset,
scene normalisation and camera paths, the evaluation split, volume-rendering primitives, and the
network parts both stages use (ResNet backbone, harmonic encodings). Imports no model package.
"""
