"""Methods written as plugin files (each one file registering its method, loss term, sampler and step, importing
dhm by absolute names), built in: DLB. Importing the package registers them."""

from . import dlb  # noqa: F401 - register DLB

__all__: list[str] = []
