"""Preference-optimisation adapter (DPO / ORPO / KTO / SimPO) over the SFT checkpoint."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.tune import TrainConfig, align_preference  # noqa: E402

runtime.setup(seed=snakemake.params.seed, threads=snakemake.threads)  # noqa: F821
params = {**snakemake.params.train, "seed": snakemake.params.seed}  # noqa: F821
cfg = TrainConfig.from_config(snakemake.params.method, params)  # noqa: F821
align_preference(snakemake.input.sft, snakemake.input.harmful_answers, snakemake.output[0], cfg,  # noqa: F821
                 model_name=snakemake.wildcards.model,  # noqa: F821
                 benign_answers_parquet=snakemake.input.benign_answers or None)  # noqa: F821
