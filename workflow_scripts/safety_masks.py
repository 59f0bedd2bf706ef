"""Safety-critical masks of the reference adapter from its own safe answers to harmful prompts."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.scores.adapter_scores import ScoreConfig, score_reference_file  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
cfg = ScoreConfig(method=sm.wildcards.score, keep_fraction=sm.params.nlsr["keep_fraction"], seed=sm.params.seed)
try:
    score_reference_file(sm.input.reference, sm.input.calibration, sm.output.masks, cfg,
                         keep_all=sm.params.nlsr["calibration_keep"] == "all", scores_path=sm.output.scores)
except ValueError as err:
    raise SystemExit(str(err)) from None
