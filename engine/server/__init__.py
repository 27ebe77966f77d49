"""HTTP serving with dynamic batching (app.py, batcher.py) and a Ray Serve deployment (ray_app.py)."""
