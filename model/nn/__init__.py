"""The networks (PyTorch): encoders, losses, the gradient-keeping all-gather, heads, the published
reference network, and where a backbone's weights come from."""
