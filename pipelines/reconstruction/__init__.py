"""Reconstruction: fitting one field per scene (SparseFusion, SDS, photometric) and its command."""
