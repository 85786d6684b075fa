"""From feature vectors to an answer: the classifiers (plain arrays), the head and its "unknown" decision, the
novelty score, the gallery of enrolled photos, and the answerer that puts them together for a frame."""
