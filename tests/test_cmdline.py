"""The VSA's kernel arguments kept under Xen, and dropped with why."""

from __future__ import annotations

from fixtures.build_image import FIXTURES
from vsaimage.vsa import cmdline
from vsaimage.xen.xlcfg import own_args

LHOS12_GRUB = (FIXTURES / "lhos12-root/boot/grub/grub.conf").read_text()
OURS = own_args(vsyscall_emulate=False)


def test_lhos12_vendor_arguments() -> None:
    got = cmdline.from_menus({"/boot/grub/grub.conf": LHOS12_GRUB}, OURS)
    assert got.kept == ("ro", "ramdisk_size=32768", "elevator=deadline", "ipv6.disable=1",
                        "scsi_mod.scan=sync")
    assert [d.arg for d in got.dropped] == ["root=LABEL=/", "console=ttyS0,9600", "crashkernel=128M@33M"]
    assert all(d.why for d in got.dropped)
    assert got.source == "/boot/grub/grub.conf, default=0: 'HP LeftHand OS (2.6.32-431.11.2.el6.x86_64)'"


def test_saniq8_syslinux_arguments() -> None:
    # a SYSLINUX config is read like a GRUB menu: DEFAULT's label, its APPEND
    text = (FIXTURES / "saniq8-boot/syslinux.cfg").read_text()
    got = cmdline.from_menus({"/boot/syslinux.cfg": text}, OURS)
    assert got.kept == ("ro", "vga=791", "quiet")
    assert [d.arg for d in got.dropped] == ["root=/dev/md200", "console=tty0"]
    assert got.source == "/boot/syslinux.cfg, DEFAULT vga: 'vga'"
    assert "/boot/syslinux.cfg" in cmdline.READS


def test_filter_drops_loader_console_and_ours() -> None:
    words = ["BOOT_IMAGE=/vmlinuz", "initrd=/initrd.img", "console=tty0", "console=hvc0", "net.ifnames=1",
             "quiet", "console=ttyS1,115200n8", "mem=2G"]
    kept, dropped = cmdline.filter_args(words, OURS)
    assert kept == ("quiet", "mem=2G")
    why = {d.arg: d.why for d in dropped}
    assert why["net.ifnames=1"] == "vsaimage sets net.ifnames=0"
    assert why["console=hvc0"] == "vsaimage sets console=hvc0"
    assert set(why) == set(words) - set(kept)


def test_no_menu_or_no_kernel_line() -> None:
    assert cmdline.from_menus({}, OURS).kept == ()
    got = cmdline.from_menus({"/boot/grub/grub.conf": "default=0\ntitle x\n"}, OURS)
    assert got.kept == () and "no entry with a kernel line" in got.source


def test_split_args_keeps_quoted_words() -> None:
    assert cmdline.split_args(' a  b="c d" e ') == ("a", 'b="c d"', "e")
