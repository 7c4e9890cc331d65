"""convdoctor: finds what is wrong with a PyTorch CNN before production does."""

__version__ = "0.1.0"
