"""Exceptions of the partsight package: what stops the demo or its servers from being set up.

PartsightError              base of everything raised here
└── SetupError              something the demo needs could not be set up; the message tells a person what to do
    ├── MissingServer       neither a binary nor the embedded package for the MQTT broker or Redis
    └── NotReady            a server or a process the demo started exited, or did not answer in time
"""

from __future__ import annotations


class PartsightError(Exception):
    """Base of the partsight package's exceptions."""


class SetupError(PartsightError):
    """Something the demo needs could not be set up; the message is for a person."""


class MissingServer(SetupError):
    """Neither a binary nor the embedded package for the MQTT broker or Redis is installed."""


class NotReady(SetupError):
    """A server or a process the demo started exited, or did not answer in time."""
