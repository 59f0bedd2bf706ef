"""EXPO safety reference adapter."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.realign import expo  # noqa: E402

sm = snakemake  # noqa: F821
expo(sm.input.aligned, sm.output.ckpt, alpha=sm.params.nlsr["alpha"], mode=sm.params.nlsr["expo_mode"])
