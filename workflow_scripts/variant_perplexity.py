"""Perplexity of held-out benign text under one checkpoint variant."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.perplexity import variant_perplexity_file  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
variant_perplexity_file(sm.input.ckpt, sm.input.text, sm.output.json, variant=sm.wildcards.variant,
                        dataset=sm.params.dataset)
