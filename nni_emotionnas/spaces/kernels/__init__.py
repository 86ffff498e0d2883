"""CPU speed-ups of the supernets, each computing the same function as NNI's own modules in fewer, larger ops."""
