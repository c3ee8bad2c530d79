"""Market analytics over closed candles: features, anomaly detectors and the models trained on them."""
