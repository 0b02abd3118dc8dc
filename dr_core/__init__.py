"""dr_core: RBMs, DBNs and MLPs trained with diversifying regularization (DR as defined in
docs/dr.md). Imports only torch, numpy and the standard library."""
