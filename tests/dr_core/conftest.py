"""dr_core tests share two CPU cores with other work: one intra-op thread keeps them fast."""
import torch

torch.set_num_threads(1)
