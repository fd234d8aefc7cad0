"""The property-testing assignment: write tests that catch bugs in ChannelAffine's backward pass.

Your tests run against the correct layer (they must pass) and against planted bug
variants; you score the fraction of variants your tests catch (course/SYLLABUS.md).
Notebook 05 shows the tools: npstn.testing.gradcheck, npstn.testing.strategies,
Hypothesis's @given. Always get the layer through layer_under_test(), never by
importing ChannelAffine directly: that is how the grader swaps in its variants.

Check your score from the solution repository:  npstn course mutants PATH/TO/THIS/FILE
"""
import numpy as np

from npstn.course.mutation import layer_under_test
from npstn.testing import gradcheck

ChannelAffine = layer_under_test()


def test_a_hand_written_example():
    """A weak start (notebook 05's hand-written test): one image, the initial parameters."""
    layer = ChannelAffine(3)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8))
    gradcheck(layer, x)


# TODO: your property tests. Which parameters, shapes and protocol steps (zero_grad,
# two backward passes) does a ChannelAffine have to get right?
