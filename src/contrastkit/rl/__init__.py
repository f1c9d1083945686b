"""Reinforcement learning from pixels (task ``rl``): environments rendered to stacked greyscale
frames (``envs``), batched crop / shift augmentations (``augment``) and the Stable-Baselines3
agent around a contrastkit encoder (``agent``; imports stable-baselines3 and gymnasium, the
``contrastkit[rl]`` extra)."""
