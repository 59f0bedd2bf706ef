"""neuronkit: find the safety neurons of a language model, test that they are causal, use them to repair safety."""

__version__ = "0.1.0"
