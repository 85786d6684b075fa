"""The model store, light: versions and `current`, the catalog, enrolment requests and the review stores.

Plain files and JSON only (no numpy, torch, scikit-learn or Pillow), so the bridge's image and the HTTP API
import it. Nothing here imports another room of `models`.
"""
