"""multipair: one POS backend, many EFTPOS terminals over the mx51 SPI protocol."""

__all__ = ["__version__"]

__version__ = "0.1.0"
