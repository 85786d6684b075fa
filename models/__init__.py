"""Recognition model code: backbones, image decoding, features, heads, catalogs and artifacts. No MQTT, no Celery."""
