"""Facts from outside the project, with their sources: model architectures, GPUs, prices, conventions."""

from .loader import Catalog, CatalogError, GpuProduct, ModelArchitecture, Price, WeightScheme, load_catalog

__all__ = ["Catalog", "CatalogError", "GpuProduct", "ModelArchitecture", "Price", "WeightScheme", "load_catalog"]
