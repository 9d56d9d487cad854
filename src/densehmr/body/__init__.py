"""Body models (the open body, or SMPL) and every asset derived from them; see assets.py."""

from densehmr.body.assets import Body, Charts, GeodesicEval, LowPoly
from densehmr.body.loader import load_body

__all__ = ["Body", "Charts", "GeodesicEval", "LowPoly", "load_body"]
