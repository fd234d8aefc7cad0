"""MNIST and distorted-MNIST data."""
