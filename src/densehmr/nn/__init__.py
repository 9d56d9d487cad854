"""Neural network building blocks: image backbones and method heads."""
