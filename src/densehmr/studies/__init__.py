"""Studies over many runs: the method comparison, the ablations, W&B sweeps and the claims report.

grid.py runs cells (one training or evaluation each, in its own process); tables.py aggregates seeds and
writes markdown; compare.py, ablation.py, sweep.py and report.py are the commands (`make compare`,
`make ablation`, `make sweep`, `make report`). The ablation grids are defined once, in configs/sweeps/.
"""
