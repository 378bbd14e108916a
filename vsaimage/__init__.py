"""vsaimage: turn a dd'd LeftHand / StoreVirtual VSA system disk into a Xen PV domU disk.

The package is layered; a module imports only from its own layer's package
and from the layers below it (`make lint` checks this with import-linter,
TYPE_CHECKING imports included, and that no import cycle exists):

    cli/        the parser made from the option table, the live console and
                the renderers of the result documents (only cli/ imports rich)
    commands/   convert, inspect, verify, initrd: named steps over the layers
                below; the option table and the result documents
    guest/ outputs/ plan
                guest/: the libguestfs adapter (the only importer of
                guestfs), guest paths as the VSA resolves them, partition
                roles; it knows no edit. outputs/: staging, copies, the
                commit. plan: facts + options -> every change as data; it
                knows no adapter. None of the three imports another.
    initrd/     the initrd repack: cpio segments, libarchive, drivers to add
    edits/      one module per edit: a pure transform and its postcondition
    kmod/ xen/  kmod/: the kernel's version, module names and selection, the
                modules payload, depmod. xen/: the xl config, the guest's
                boot menu, its identity (MAC and UUID)
    vsa/        pure knowledge of the VSA: its grub config, glibc, release,
                the modules it needs under Xen
    inputs/     what the user holds: formats by content, archives, iSCSI
    tools       the external programs: found in one way, failures said in one way
    cancel errors model progress
                leaves: they import nothing of vsaimage

The core reports through the `progress` protocol and never draws anything.
"""

__version__ = "0.1.0"
