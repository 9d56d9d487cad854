"""`make gpu-check`: the code's CUDA path, run once end to end on a GPU in a few minutes, with its
findings in results/gpu_check.md.

1. training (`training`): each method's `experiment=paper_<method>` for a few steps through
   `densehmr.train`, with mixed precision and DDP on one device, on a small synthetic benchmark made
   for the check; steps/s and peak memory;
2. forward (`forward`): each method's network on the CPU and on the GPU, same weights and batch,
   outputs compared against stated tolerances (float32, TF32 off), and the mixed-precision forward's
   distance from them reported;
3. renderer (`renderer`): rasterization, IUV maps and the soft silhouette (and its gradient) on the GPU
   against the CPU, and their speed on each.

`python -m densehmr.gpu_check` on a machine without CUDA says so in one line and exits 0;
`--dry-run` runs everything on the CPU at tiny sizes (what the tests run).
"""
