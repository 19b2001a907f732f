"""The comparative methods: pixelNeRF and forward-model diffusion (DFM), with their fields and renderers."""
