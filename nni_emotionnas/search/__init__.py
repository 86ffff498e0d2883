"""Model space + training data -> NNI search (one-shot or multi-trial through the NNI manager) -> genotype.json."""
