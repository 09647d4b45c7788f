"""`cnnlab serve`: a local web app to draw a digit and watch the network think, with a JSON API (FastAPI)."""

from .app import bind, create_app, serve

__all__ = ["bind", "create_app", "serve"]
