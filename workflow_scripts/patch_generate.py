"""U's answers with k neurons patched (safety or random) from A."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.generate import GenerationConfig  # noqa: E402
from neuronkit.patching import patch_generate_file  # noqa: E402
from neuronkit.neurons import as_k  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = sm.params.patching
k = float(sm.wildcards.k)
info = patch_generate_file(sm.input.unaligned, sm.input.aligned, sm.input.index, sm.input.prompts, sm.output.parquet,
                           GenerationConfig(seed=sm.params.seed, **sm.params.gen), k=as_k(k),
                           selection=sm.wildcards.selection, value=p["value"], mode=p["mode"],
                           stats_path=sm.input.stats, seed=p["random_seed"])
print(info)
