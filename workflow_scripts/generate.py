"""Answers of one variant on one dataset."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.generate import GenerationConfig, generate_file  # noqa: E402

runtime.setup(seed=snakemake.params.seed, threads=snakemake.threads)  # noqa: F821
cfg = GenerationConfig(seed=snakemake.params.seed, **snakemake.params.gen)  # noqa: F821
generate_file(snakemake.input.ckpt, snakemake.input.prompts, snakemake.output.parquet, cfg,  # noqa: F821
              variant=snakemake.wildcards.variant)  # noqa: F821
