"""Exceptions of the models package.

ModelError                  base of everything raised here
├── ImageError              a frame that cannot become a model input; carries the contract's code
├── BackboneError           unknown backbone name, missing or mismatched weights
├── CatalogError            a catalog file that is missing, malformed or inconsistent
├── DatasetError            a training image folder that does not fit the expected layout
├── ArtifactError           a model directory that is missing files or fails verification
├── ReviewError             the review store cannot be created, written or read
│   └── UnknownItem         no review item by that id (or an id that is not one: never a path)
├── StoreBusy               the model store's lock was held too long (an enrolment or an activation)
└── EnrolmentError          an enrolment that cannot be stored or carried out; `code` says why
    └── UnknownEnrolment    no enrolment by that id (or an id that is not one: never a path)
"""

from __future__ import annotations


class ModelError(Exception):
    """Base of the models package's exceptions."""


class ImageError(ModelError):
    """A frame that cannot be decoded into a model input. `code` is a contract error code string."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BackboneError(ModelError):
    pass


class CatalogError(ModelError):
    pass


class DatasetError(ModelError):
    pass


class ArtifactError(ModelError):
    pass


class ReviewError(ModelError):
    """The review store cannot be created, written or read, or a request to it does not fit."""


class UnknownItem(ReviewError):
    """No review item by that id: it never existed, was evicted, or the id is not one (never read as a path)."""


class EnrolmentError(ModelError):
    """An enrolment that cannot be stored or carried out. `code` is a stable string the API and results carry."""

    def __init__(self, message: str, code: str = "bad_enrolment") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownEnrolment(EnrolmentError):
    """No enrolment by that id: it never existed, or the id is not one (never read as a path)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "unknown_enrolment")


class StoreBusy(ModelError):
    """Another process held the model store's lock (enrolment, activation) for longer than the caller waits."""
