"""Recurrent cells written as small graphs (the deep stream's genotype format), a catalog of known cells,
an importer of NAS-Bench-NLP cell descriptions and the fast runtime that executes a fixed cell."""
