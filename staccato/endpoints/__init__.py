"""Endpoint drivers, one module per URL scheme, imported lazily (fsspec-style registry).

Use :func:`get_driver` to get the (per-process) driver of a scheme.
"""

from __future__ import annotations

import importlib
import threading

from staccato.endpoints.base import Driver
from staccato.errors import InvalidURLError
from staccato.loading import imports_frozen

# scheme -> (module, class, pip extra that provides its library)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "file": ("staccato.endpoints.file", "FileDriver", ""),
    "http": ("staccato.endpoints.http", "HTTPDriver", "httpx"),
    "https": ("staccato.endpoints.http", "HTTPDriver", "httpx"),
    "s3": ("staccato.endpoints.s3", "S3Driver", "boto3"),
    "sftp": ("staccato.endpoints.sftp", "SFTPDriver", "paramiko"),
}
_drivers: dict[str, Driver] = {}
_lock = threading.Lock()


def get_driver(scheme: str) -> Driver:
    """The driver for ``scheme``, created once per process.

    Raises:
        InvalidURLError: no driver for the scheme, or its library is not installed (the
            message names the package to install).
    """
    with _lock:
        driver = _drivers.get(scheme)
        if driver is not None:
            return driver
        try:
            module_name, class_name, package = _REGISTRY[scheme]
        except KeyError:
            raise InvalidURLError(
                f"no driver for URL scheme {scheme!r}; supported: {', '.join(sorted(_REGISTRY))}"
            ) from None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                raise InvalidURLError(
                    f"the {scheme} driver is not available in this version"
                ) from None
            raise InvalidURLError(
                f"the {scheme} driver needs the Python package {package!r}: pip install {package}"
            ) from err
        driver = getattr(module, class_name)()
        _drivers[scheme] = driver
        return driver


def import_drivers() -> list[str]:
    """Import every driver module whose library is installed, and what its library
    imports lazily on first use (a driver module's ``warm_imports()``, where it has
    one); returns their names.

    Every worker process calls it before its threads start (the main process before
    its workflow thread, each activity process in its initializer):

    * in the main process, the control activities (``stat``, ``prepare``, ...) run in
      threads beside the workflow sandbox, and a driver first imported by such a
      thread while a workflow task ran went through the sandbox's import hook, where
      CPython 3.11 raised ``SystemError: Objects/dictobject.c:1899: bad argument to
      internal function`` (seen once in a full test run: paramiko's first import in
      ``prepare`` failed a transfer);
    * in any process, two threads importing one library's modules at once can meet in
      a circular import, and Python then hands one of them a half-initialised module
      (seen: ``AttributeError: module 'urllib3' has no attribute 'util'`` from two
      resumed S3 streams making their first clients together).

    The modules are imported with the garbage collector paused and then frozen
    (:func:`staccato.loading.imports_frozen`); the ``warm_imports()`` run after, with
    the collector on: S3's throwaway client leaves ~34,000 objects of garbage.
    """
    modules = []
    with imports_frozen():
        for module_name in sorted({module for module, _, _ in _REGISTRY.values()}):
            try:
                modules.append(importlib.import_module(module_name))
            except ImportError:  # its library is not installed: get_driver names it
                continue
    for module in modules:
        warm = getattr(module, "warm_imports", None)
        if warm is not None:
            warm()
    return [module.__name__ for module in modules]
