"""Exceptions of the models package.

ModelError                  base of everything raised here
├── ImageError              a frame that cannot become a model input; carries the contract's code
├── BackboneError           unknown backbone name, missing or mismatched weights
├── CatalogError            a catalog file that is missing, malformed or inconsistent
├── DatasetError            a training image folder that does not fit the expected layout
├── TrainingError           rows or settings a classifier or the novelty score cannot be fitted with
├── InvalidModel            a head, classifier, gallery, novelty score or enrolment base whose parts are
│                           malformed or do not fit together (read from a version: load_model says ArtifactError)
├── ArtifactError           a model directory that is missing files, fails verification or holds a malformed file
│   └── UnknownVersion      no version by that name in the store (or a name that is not one: never a path)
├── ReviewError             the review store cannot be created, written or read
│   └── UnknownItem         no review item by that id (or an id that is not one: never a path)
├── StoreBusy               the model store's lock was held too long (an enrolment or an activation)
│   ├── ConsolidationBusy   another process is consolidating the store
│   └── RefinementsFull     the head carries all the quick enrolments it may while a consolidation folds them in
├── EnrolmentError          an enrolment that cannot be stored or carried out; `code` says why
│   └── UnknownEnrolment    no enrolment by that id (or an id that is not one: never a path)
└── LineError               a line (a named set of products) or a device's line that cannot be set or used;
                            `code` says why (unknown_line, unknown_product, unknown_category, line_in_use, ...)

A plain ValueError or AssertionError from this package is a bug (a broken invariant), never a bad input: nothing
here catches it, so it reaches the log with its traceback.
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


class TrainingError(ModelError):
    """Training rows or settings a classifier or the novelty score cannot be fitted with: a single class, no
    never-seen frames, a share to refuse outside (0, 1]. An enrolment reports it as `refit_failed`."""


class InvalidModel(ModelError):
    """A head, classifier, gallery, novelty score or enrolment base whose parts are malformed or do not fit
    together. Read from a version's files it means a malformed version: load_model raises ArtifactError."""


class ArtifactError(ModelError):
    """A model directory that is missing files, fails verification or holds a file that is not what it says."""


class UnknownVersion(ArtifactError):
    """No model version by that name in the store, or a name that is not one (never read as a path)."""


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


class ConsolidationBusy(StoreBusy):
    """Another process is consolidating the store (models.train.consolidation): its rounds take these enrolments
    along."""


class RefinementsFull(StoreBusy):
    """The current head carries as many quick enrolments as it may (models.train.enrolment.MAX_REFINEMENTS) while a
    consolidation of the store folds them in: an enrolment now would refit every node itself, for as long as that
    consolidation takes, and make it write nothing. Try again when it lands: `running_s` since its round began,
    `expected_s` until it lands if it takes as long as the round before (None: not known). `first_wait`: the
    request recorded this wait for the first time (models.train.enrolment_runs.run_request): its device is told."""

    def __init__(self, message: str, *, running_s: float | None = None, expected_s: float | None = None) -> None:
        super().__init__(message)
        self.running_s = running_s
        self.expected_s = expected_s
        self.first_wait = False


class LineError(ModelError):
    """A line or a device's line that cannot be set, read or used. `code` is a stable string the API, the command
    line and a device's error topic carry."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
