"""Spatial transformers: grid generators behind one interface, and the SpatialTransformer module."""
from npstn.stn.transforms import *  # noqa: F401,F403
from npstn.stn.spatial_transformer import SpatialTransformer  # noqa: F401
