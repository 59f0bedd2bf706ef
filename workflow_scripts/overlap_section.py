"""Cross-method overlap section and its heat map."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.overlap import OverlapConfig, overlap_files  # noqa: E402

sm = snakemake  # noqa: F821
methods = {m: sm.input[m] for m in sm.params.overlap["methods"]}
cfg = OverlapConfig(dense_k=sm.params.overlap["dense_k"])
section = overlap_files(methods, sm.output.json, sm.output.plot, cfg)
for pair in section["pairs"]:
    print(pair["module"], pair["a"], pair["b"], "k", pair["k"], "jaccard", pair["jaccard"], "spearman", pair["spearman"])
