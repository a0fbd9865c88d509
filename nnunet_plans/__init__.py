"""nnU-Net v2 bridge: searched genotypes as nnU-Net networks, plans variants, trainers, the comparison harness.

Modules are imported one by one (nnU-Net locates ``nnunet_plans.network.SearchedNetwork`` by its dotted path);
see docs/nnunet.md.
"""
