"""densehmr: train and compare human body recovery methods (3D mesh and DensePose)."""

__version__ = "0.1.0"
