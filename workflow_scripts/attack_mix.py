"""The poisoned fine-tuning mix for one harmful fraction p."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.attack import MixConfig, attack_mix_file  # noqa: E402
from neuronkit.judge import make_judge  # noqa: E402

sm = snakemake  # noqa: F821
n = sm.params.nlsr
judge = make_judge(sm.params.judge) if n["drop_refusals"] else None
cfg = MixConfig(n=n["n"], p=float(sm.wildcards.p), seed=sm.params.seed, drop_refusals=n["drop_refusals"])
attack_mix_file(sm.input.task, sm.input.harmful, sm.output.parquet, cfg, judge=judge)
