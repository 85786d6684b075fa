"""The MQTT side of partsight: the wire contract, topics and the bridge that turns frames into tasks.

Nothing in this package imports torch, torchvision, scikit-learn or Pillow: it runs on small gateways.
"""
