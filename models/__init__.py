"""The recognition model, in four rooms (no MQTT, no Celery):

    store/    versions and `current`, the catalog, enrolment requests, the review stores (light)
    extract/  image bytes -> feature vectors: decoding, backbones, recipes, ONNX export, engines
    answer/   feature vectors -> an answer: classifiers, head, novelty, gallery, answerer
    train/    new versions: training, node fitting, enrolment, open-set calibration, augmentation, report

and at the root the bundle (a version directory written, verified and loaded: bundle.py), the recognizer
(bytes in, answers out: recognizer.py) and the package's exceptions (errors.py). Rooms import downwards only:
store and extract and answer import none of the others; the bundle imports those three; train imports all.
"""
