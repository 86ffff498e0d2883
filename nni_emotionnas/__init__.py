"""EmotionNAS for NNI: two-stream neural architecture search for speech emotion recognition."""

__version__ = "0.1.0"
