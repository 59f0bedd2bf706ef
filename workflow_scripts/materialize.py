"""Base checkpoint of a model: builtins to safetensors, hub ids and paths to a manifest."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.models import materialize  # noqa: E402
from neuronkit.modelspec import ModelSpec  # noqa: E402

runtime.setup(seed=0, threads=snakemake.threads)  # noqa: F821
spec = ModelSpec.from_config(snakemake.wildcards.model, snakemake.params.model)  # noqa: F821
materialize(spec, snakemake.output[0])  # noqa: F821
