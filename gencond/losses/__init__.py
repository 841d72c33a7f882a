"""Losses shared by the methods: adversarial (DiM's AC-WGAN-GP, the codebook generator's
feature-space GAN), matching between real and synthetic batches, and the codebook
generator's feature-matching, intra-class and inter-class losses."""
