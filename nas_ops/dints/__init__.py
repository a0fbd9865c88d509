"""DiNTS (He et al., CVPR 2021) through MONAI: the comparison row of the C2FNAS bundle."""
