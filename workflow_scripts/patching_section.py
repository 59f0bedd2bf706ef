"""Report section: restore ratio curves (safety vs random), paired tests, perplexity; and the plot."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.artifacts import read_json  # noqa: E402
from neuronkit.evaluate import restore_section  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.neurons import NeuronIndex, as_k  # noqa: E402
from neuronkit.patching import change_shares  # noqa: E402
from neuronkit.report import plot_restore_curve  # noqa: E402

sm = snakemake  # noqa: F821
c, p = sm.params.contrast, sm.params.patching
base = "results/" + sm.wildcards.model + "/scored/{variant}/{{dataset}}.parquet"
perplexity = read_json(sm.input.perplexity) if "perplexity" in sm.input.keys() else None
ks = {label: as_k(k) for label, k in zip(sm.params.k_labels, p["k_grid"])}
shares = change_shares(NeuronIndex.read(sm.input.index), ks, seed=p["random_seed"])
section = restore_section(base.format(variant=c["unaligned"]), base.format(variant=c["aligned"]), sm.params.nested,
                          perplexity, shares)
section.update(variants={"aligned": c["aligned"], "unaligned": c["unaligned"]}, mode=p["mode"], value=p["value"],
               random_seed=p["random_seed"])
if perplexity:
    section["perplexity"] = perplexity
write_json(section, sm.output.json)
plot_restore_curve(section, sm.output.plot)
