"""On the board: a virtual board booted in qemu-system, real boards over SSH (docs/board.md).

* :mod:`.image` makes what a virtual board boots (a disk image from the same Debian recipe as
  ``rvtorch rootfs``, Debian's kernel and initrd, an SSH key) and the trixie QEMU that runs it.
* :mod:`.vm` starts, watches, reuses and stops the virtual board (``board up|status|down``).
* :mod:`.remote` is the one SSH/scp client every board (virtual or real) is reached through.
* :mod:`.install` checks a board against a wheel and installs it with pip into a venv.
"""
