"""Add judge columns to a generations file."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.judge import judge_file  # noqa: E402

judge_file(snakemake.input.parquet, snakemake.output.parquet, snakemake.params.judge)  # noqa: F821
