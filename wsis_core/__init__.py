"""wsis_core: weakly supervised instance segmentation with Center-context-gap Refinement (CCGR, AAAI 2020).

A plain PyTorch library: no web, database or queue imports. One module per box of the paper's Fig. 2.
"""

__version__ = "0.1.0"
