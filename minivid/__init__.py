"""minivid: text-to-video diffusion rebuilt from scratch at tiny scale, offline, on a CPU (see README.md)."""
