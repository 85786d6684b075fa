"""partsight's HTTP API (`partsight api`): recognise, enrol, products, model versions, review, the operator page.

Light like the bridge: FastAPI, paho, Celery and the stdlib parts of `models`; never torch, scikit-learn or Pillow.
"""
