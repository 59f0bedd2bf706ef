"""Perplexity before and after SN-Tune / RSN-Tune."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.data import read_table  # noqa: E402
from neuronkit.evaluate import perplexity  # noqa: E402
from neuronkit.models import load_variant  # noqa: E402
from neuronkit.report import write_json  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=0, threads=sm.threads)
texts = read_table(sm.input.text).column("prompt").to_pylist()
out = {"text": "prompt text"}
for name in ("before", "sntune", "rsntune"):
    model, tok = load_variant(getattr(sm.input, name))
    out[name] = perplexity(model, tok, texts)
write_json(out, sm.output.json)
