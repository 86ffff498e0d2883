"""A network + datasets -> a trained network: the Lightning SER evaluator, the fixed-network trainer, UA/WA."""
