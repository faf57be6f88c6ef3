"""probclr: SimCLR representation learning on images, with a probabilistic head and honest evaluation."""

__version__ = "0.1.0"
