"""The shipped Hydra configs: ``train.yaml`` (the defaults list) and one folder per config group.

A package, so that Hydra finds them as ``pkg://gan_lab.conf`` wherever gan_lab is installed.
"""
