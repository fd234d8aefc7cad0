"""Spatial transformers: grid generators behind one interface, and the SpatialTransformer module."""
