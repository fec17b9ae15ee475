"""Pure PyTorch kernels of the three methods. No ComfyUI imports are allowed in this package."""
