"""Safety-critical masks of the reference adapter from its own safe answers to harmful prompts."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.data import read_table  # noqa: E402
from neuronkit.scores.adapter_scores import ScoreConfig, calibration_examples, score_adapter  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
table = read_table(sm.input.calibration)
prompts, answers = calibration_examples(table, keep_all=sm.params.nlsr["calibration_keep"] == "all")
if not prompts:
    raise SystemExit(f"{sm.input.calibration}: the judge rated none of the reference's answers safe, so there is "
                     "no calibration data; use more nlsr.calibration prompts or nlsr.calibration_keep: all")
print(f"calibration: {len(prompts)} of {table.num_rows} answers judged safe")
cfg = ScoreConfig(method=sm.wildcards.score, keep_fraction=sm.params.nlsr["keep_fraction"], seed=sm.params.seed)
score_adapter(sm.input.reference, prompts, answers, sm.output.masks, cfg, scores_path=sm.output.scores)
