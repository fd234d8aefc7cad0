"""Hypothesis strategies for property-testing npstn's ops and your own layers."""
from npstn.testing.strategies.arrays import *  # noqa: F401,F403
from npstn.testing.strategies.layers import *  # noqa: F401,F403
from npstn.testing.strategies.grids import *  # noqa: F401,F403
from npstn.testing.strategies.conv import *  # noqa: F401,F403
from npstn.testing.strategies.transforms import *  # noqa: F401,F403
