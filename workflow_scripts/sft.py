"""SFT adapter over the base checkpoint."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.alignment_data import AlignmentDataConfig  # noqa: E402
from neuronkit.judge import refusal_judge_from_config  # noqa: E402
from neuronkit.tune import TrainConfig, align_sft  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
cfg = TrainConfig.from_config("sft", {**sm.params.train, "seed": sm.params.seed})
answers = dict(zip(sm.params.datasets, sm.input.answers))
align_sft(sm.input.base, answers, sm.output[0], cfg, AlignmentDataConfig.from_config(sm.params.data),
          refusal_judge_from_config(sm.params.judge), model_name=sm.wildcards.model,
          variant_name=Path(sm.output[0]).name)
