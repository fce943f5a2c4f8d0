"""kmunet: KAN convolutions, KM-UNet segmentation and implicit neural representations for medical imaging."""

__version__ = "0.1.0"

__all__ = ["__version__"]
