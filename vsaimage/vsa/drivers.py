"""The kernel modules a VSA needs under Xen and that nothing in it loads
there: rc.drivers loads those of the hardware it knows (VMware, Hyper-V),
not the Xen block and network front-ends, nor then what the system expects
(ext3, a 32 MB ramdisk, md RAID). The drivers edit modprobes them from
rc.drivers; `--modules minimal` sends them to the guest."""

from __future__ import annotations

# modprobe's arguments, in the order rc.drivers loads them
XEN_MODULES = ("xen_blkfront", "xen_netfront", "ext3", "rd rd_size=32768", "md", "raid0", "raid1")
# their names alone
NAMES = tuple(line.split()[0] for line in XEN_MODULES)
