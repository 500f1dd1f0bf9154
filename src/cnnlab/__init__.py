"""cnnlab: a config-driven experiment CLI for convolutional networks."""

__version__ = "0.1.0"
