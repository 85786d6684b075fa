"""partsight: recognise industrial products from camera frames over MQTT."""

__version__ = "0.1.0"
