"""Network modules: StyleGAN2 layers, mapping, synthesis, super-resolution, discriminator, generator."""
