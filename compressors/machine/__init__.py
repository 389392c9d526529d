"""The machine layer: what this machine is and does: CPU/GPU identity and tiers, the kernel probe, the
allocator, timing and contention, process and GPU memory, device placement.
"""
