"""Pipeline steps, one small function per policy; the order lives in ``pipeline.py``."""
