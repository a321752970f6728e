"""rvtorch: build PyTorch for RISC-V and ARM from source and prove every wheel it makes."""

__version__ = "0.1.0"
