"""Add judge columns to a generations file (answer perplexities under the model's intact base)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.judge import judge_file  # noqa: E402

runtime.setup(seed=snakemake.params.seed, threads=snakemake.threads)  # noqa: F821
judge_file(snakemake.input.parquet, snakemake.output.parquet, snakemake.params.judge,  # noqa: F821
           base_ckpt=snakemake.input.base)  # noqa: F821
