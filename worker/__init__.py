"""The recognition worker: a Celery app on Redis that decodes, batches, classifies and answers over MQTT."""
