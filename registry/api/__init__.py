"""The registry's HTTP service (``qiledger serve``): one FastAPI application with
a router per resource under :mod:`registry.api.routes`."""
