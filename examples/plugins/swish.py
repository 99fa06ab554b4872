"""An einnas plugin: swish with a learnable slope, x * sigmoid(beta * x).

Name "swish" in a copy of the grammar (e.g. `| "swish"` in `computation`), then:
    einnas grammar check my.lark --plugin examples/plugins/swish.py
    einnas sample -n 20 --grammar my.lark --plugin examples/plugins/swish.py
"""
import torch
from torch import nn

from einnas.grammar import register_op


class Swish(nn.Module):
    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(1))  # learned, starts as SiLU

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


# No shape rule: swish keeps the shape, in image and token mode alike.
@register_op("swish", params=lambda state, args: 1, doc="x * sigmoid(beta x), beta learnable")
def build_swish(state, args):
    return Swish()
