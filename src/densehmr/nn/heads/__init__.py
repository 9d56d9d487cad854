"""Network heads on top of the backbones (DensePose, VertexPose, lifting, HMR, PyMAF)."""
