"""netpert: ARACNe networks, VIPER activity and Geneformer in-silico perturbation per cell type."""

from netpert.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
