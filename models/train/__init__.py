"""Making versions: training with cross-validation, the node fitting it shares with enrolment and open-set
calibration, enrolment, synthetic augmentation, data sets and the training report."""
