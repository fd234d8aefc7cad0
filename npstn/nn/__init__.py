"""Layers, losses and optimisers with hand-written backward passes (torch.nn names)."""
from npstn.nn.module import Module, Parallel, Parameter, Sequential
from npstn.nn import init
from npstn.nn.linear import *  # noqa: F401,F403
from npstn.nn.activation import *  # noqa: F401,F403
from npstn.nn.loss import *  # noqa: F401,F403
from npstn.nn.pooling import *  # noqa: F401,F403
from npstn.nn.conv import *  # noqa: F401,F403
from npstn.nn.projection import *  # noqa: F401,F403
from npstn.nn.optim import SGD, Adam, MultiStepLR, Optimizer, StepLR, drop_fractions, drop_milestones
from npstn.nn.serialization import load, save
