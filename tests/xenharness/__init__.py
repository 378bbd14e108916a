"""The Xen harness of the boot test: Debian's Xen 4.17 hypervisor booted by
QEMU (TCG), a dom0 made of the Debian kernel and a small initramfs holding
the Xen tools (`dom0.py`, built by `make setup`), whose init (`dom0-init.sh`)
runs `xl` on the configs a test hands it (`run.py`)."""
