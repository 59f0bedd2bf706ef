"""Safeguard probe on safety-neuron activations vs random neurons vs the majority class."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from pathlib import Path  # noqa: E402

from neuronkit import runtime  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.safeguard import SafeguardConfig, safeguard_files  # noqa: E402
from neuronkit.neurons import as_k  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = dict(sm.params.safeguard)
cfg = SafeguardConfig(k=as_k(p["k"]), l2=p["l2"], seed=sm.params.seed, drop_degenerate=p["drop_degenerate"])
tests = {Path(path).stem: path for path in sm.input.test}
write_json(safeguard_files(sm.input.ckpt, sm.input.index, list(sm.input.train), tests, cfg), sm.output.json)
