"""Neuron scoring methods; each returns a neuronkit.neurons.NeuronIndex."""
