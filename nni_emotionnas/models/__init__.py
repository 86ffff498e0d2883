"""genotype.json / baseline names -> fixed stream networks, and the two-stream fusion heads (ISM and ablations)."""
