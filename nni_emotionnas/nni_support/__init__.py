"""NNI the way its users work: HPO-style search-space JSON, the nnictl trial entries, export of the best trial
and multi-trial strategies run through the NNI manager (so every trial shows in the web UI)."""
