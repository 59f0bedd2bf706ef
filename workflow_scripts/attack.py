"""Harmful fine-tuning attack on the aligned adapter."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.attack import train_attack  # noqa: E402
from neuronkit.tune import TrainConfig  # noqa: E402

from neuronkit.variants import poisoned_variant  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
cfg = TrainConfig.from_config("sft", {**sm.params.train, "seed": sm.params.seed})
train_attack(sm.input.aligned, sm.input.mix, sm.output.ckpt, cfg, model_name=sm.wildcards.model,
             variant_name=poisoned_variant("attacked", sm.wildcards.p))
