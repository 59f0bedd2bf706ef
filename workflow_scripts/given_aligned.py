"""Aligned checkpoint given in config: a manifest pointing at the hub id or path."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.models import materialize_reference  # noqa: E402
from neuronkit.modelspec import ModelSpec  # noqa: E402

cfg = dict(snakemake.params.model)  # noqa: F821
spec = ModelSpec.from_config(snakemake.wildcards.model, {**cfg, "source": cfg["aligned"]})  # noqa: F821
materialize_reference(spec, snakemake.output[0], name="aligned")  # noqa: F821
