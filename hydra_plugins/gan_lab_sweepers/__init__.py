"""gan_lab's Hydra sweeper plugins (Hydra instantiates sweepers only from ``hydra_plugins``)."""
