"""Differentiable geometry shared by the methods: soft-argmax, rotations, UV decoding."""
