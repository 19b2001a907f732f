"""Tools: dataset rendering, camera export, figures, the demo and benchmarks."""
