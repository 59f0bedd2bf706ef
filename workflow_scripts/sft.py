"""SFT adapter over the base checkpoint."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.tune import TrainConfig, align_sft  # noqa: E402

runtime.setup(seed=snakemake.params.seed, threads=snakemake.threads)  # noqa: F821
cfg = TrainConfig.from_config("sft", {**snakemake.params.train, "seed": snakemake.params.seed})  # noqa: F821
align_sft(snakemake.input.base, snakemake.input.harmful, snakemake.input.benign_answers,  # noqa: F821
          snakemake.output[0], cfg, model_name=snakemake.wildcards.model)  # noqa: F821
