"""The synthetic DensePose benchmark: open-body people rendered and written in the real formats
(DensePose-COCO JSON, SPIN/PyMAF npz). `python -m datamodules.synthetic --help`."""

from datamodules.synthetic.generator import SyntheticGenerator, SyntheticSample
from datamodules.synthetic.writer import generate

__all__ = ["SyntheticGenerator", "SyntheticSample", "generate"]
