"""Lightning callbacks: sample grids, iteration-based checkpoints."""
