"""Report section for the contrast neuron index (counts per layer, neuron2word)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.lens import neurons_section  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=0, threads=sm.threads)
p = sm.params.patching
section = neurons_section(sm.input.index, sm.input.ckpt, n_words=p["neuron2word"], k=max(p["k_grid"]))
write_json({"contrast": section}, sm.output.json)
