"""Small utilities: atomic file writes."""
