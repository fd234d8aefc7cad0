"""The planted bugs of the mutation-graded assignment (ships only with the solution repository).

Each is a ChannelAffine whose backward pass has one realistic bug; a good set of
property tests (random parameters, drawn shapes with batch > 1, non-zero bias,
an accumulation test) catches all of them. See notebook 05.
"""


from npstn.course.mutation import ChannelAffine


class ForgetsTheWeight(ChannelAffine):
    """dL/dx = g, without w_c: right at the initial weights (all 1)."""

    def backward(self, g):
        self.weight.grad += (g * self._x).sum(axis=(0, 2, 3))
        self.bias.grad += g.sum(axis=(0, 2, 3))
        return g


class ReshapeByChannel(ChannelAffine):
    """Groups elements by channel with reshape(C, -1): right only for a batch of one (or one channel)."""

    def backward(self, g):
        c = g.shape[1]
        self.weight.grad += (g * self._x).reshape(c, -1).sum(axis=1)
        self.bias.grad += g.sum(axis=(0, 2, 3))
        return g * self.weight.data[:, None, None]


class MeanOverTheBatch(ChannelAffine):
    """Averages the weight gradient over the batch instead of summing: right for N = 1."""

    def backward(self, g):
        self.weight.grad += (g * self._x).sum(axis=(0, 2, 3)) / g.shape[0]
        self.bias.grad += g.sum(axis=(0, 2, 3))
        return g * self.weight.data[:, None, None]


class OverwritesTheGradient(ChannelAffine):
    """= instead of +=: a second backward without zero_grad overwrites; gradcheck cannot see it."""

    def backward(self, g):
        self.weight.grad = (g * self._x).sum(axis=(0, 2, 3))
        self.bias.grad = g.sum(axis=(0, 2, 3))
        return g * self.weight.data[:, None, None]


class AddsTheBiasToDx(ChannelAffine):
    """dL/dx = g w_c + b_c: right while the bias is 0 (its initial value)."""

    def backward(self, g):
        self.weight.grad += (g * self._x).sum(axis=(0, 2, 3))
        self.bias.grad += g.sum(axis=(0, 2, 3))
        return g * self.weight.data[:, None, None] + self.bias.data[:, None, None]


class FirstImageOnly(ChannelAffine):
    """Reads only the first image for the bias gradient: right for N = 1."""

    def backward(self, g):
        self.weight.grad += (g * self._x).sum(axis=(0, 2, 3))
        self.bias.grad += g[0].sum(axis=(1, 2))
        return g * self.weight.data[:, None, None]


MUTANTS = {cls.__name__: cls for cls in (ForgetsTheWeight, ReshapeByChannel, MeanOverTheBatch,
                                          OverwritesTheGradient, AddsTheBiasToDx, FirstImageOnly)}
