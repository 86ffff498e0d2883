"""Feature extraction: every extractor turns 16 kHz mono audio into an array cached by `FeatureStore`."""
