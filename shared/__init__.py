"""acr-airlock: reviewed images into a private Azure Container Registry.

``shared.__version__`` is the project's version (``shared.version``), read on first access.
"""


def __getattr__(name: str):
    if name == "__version__":
        from .version import version

        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
