"""The recognition worker: a Celery app on Redis that decodes frames, batches them through the model and answers over MQTT."""
