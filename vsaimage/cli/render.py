"""The result on stdout, drawn from the command's JSON document (so the
tables and --json always say the same thing): rich tables and key/value
lines, or the document itself with --json."""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from vsaimage.model import Status
from vsaimage.xen import bootmenu


class Screen:
    """Where results are drawn: stdout, as wide as the terminal, or 120
    columns when piped or redirected (people read those later, in wider
    windows than rich's 80-column default for non-terminals)."""

    def __init__(self, file: IO[str] | None = None) -> None:
        out = file or sys.stdout
        self.console = Console(file=out, width=None if out.isatty() else 120)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        t = Table(title=title, title_justify="left")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        self.console.print(t)

    def facts(self, pairs: Sequence[tuple[str, object]]) -> None:
        """Key/value lines under a table."""
        width = max(len(k) for k, _ in pairs)
        for k, v in pairs:
            self.console.print(f"{k.ljust(width)}  {'' if v is None else v}", highlight=False,
                               markup=False, soft_wrap=True)


def json(screen: Screen, doc: Mapping[str, Any]) -> None:
    print(jsonlib.dumps(doc, indent=2, sort_keys=False), file=screen.console.file, flush=True)


def show(screen: Screen, command: str, doc: Mapping[str, Any]) -> None:
    """The tables of `command`'s result (of each image, for a batch)."""
    shows: dict[str, Callable[[Screen, Mapping[str, Any]], None]] = {
        "inspect": show_inspect, "verify": show_verify, "convert": show_convert, "initrd": show_initrd,
    }
    if doc.get("batch"):
        show_batch(screen, doc, shows[command])
    else:
        shows[command](screen, doc)


STATUS_STYLE: dict[Status, str] = {
    "applied": "green",
    "already applied": "green",
    "apply": "yellow",
    "not applied": "red",
    "skipped": "dim",
    "not used": "dim",
}


def show_partitions(screen: Screen, doc: Mapping[str, Any]) -> None:
    roles = {doc["root"]["partition"]: "root"}
    if doc.get("boot"):
        roles[doc["boot"]["partition"]] = "boot"
    rows = [
        (p["number"], p["start"], _size(p["size"]), p["mbr_id"], p["fstype"], p["label"],
         roles.get(p["number"], ""))
        for p in doc["partitions"]
    ]
    screen.table(f"Partitions of {doc['image']}",
              ["#", "start", "size", "type", "filesystem", "label", "role"], rows)


def show_steps(screen: Screen, title: str, steps: Sequence[Mapping[str, Any]]) -> None:
    """Steps with their status; a convert's (planned or carried out) also
    with the files each writes."""
    with_changes = any("changes" in s for s in steps)
    rows = []
    for s in steps:
        style = STATUS_STYLE.get(s["status"], "")
        status = f"[{style}]{s['status']}[/]" if style else s["status"]
        changes = ("\n".join(_change(c) for c in s.get("changes", [])),) if with_changes else ()
        rows.append((s["step"], s["title"], status, *changes, _details(s.get("details", {}))))
    t = Table(title=title, title_justify="left")
    for c in ("step", "what", "status", *(("changes",) if with_changes else ()), "details"):
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    screen.console.print(t)


def _change(change: Mapping[str, Any]) -> str:
    """One change of a step as a line: the guest path or host file it writes."""
    if "install_modules" in change:
        return f"{change['install_modules']}/ (modules)"
    if "link" in change:
        return f"{change['link']} -> {change['to']}"
    return str(change.get("write") or change.get("output"))


# Details that the step's title already says, or that only the JSON needs
# (notes get lines of their own under the table).
_QUIET_KEYS = {"file", "dir", "rules", "script", "devices", "version", "input_bytes", "output_bytes",
               "module_versions", "input_compression", "already_applied", "entries", "early_segments",
               "notes", "init", "slots", "kernel_args", "command_line"}


def _details(details: Mapping[str, Any]) -> str:
    """A short human summary of a step's details (the JSON has them all)."""
    parts = []
    for k, v in details.items():
        if k in _QUIET_KEYS or v in (None, [], (), {}, False):
            continue
        if k == "drivers" and isinstance(v, Mapping):
            v = _drivers(v)
        elif isinstance(v, Mapping) and all(isinstance(x, int) for x in v.values()):
            v = f"{sum(v.values())} in {len(v)} files"
        elif isinstance(v, Mapping):
            v = ", ".join(f"{kk.rsplit('/', 1)[-1]}: {vv}" for kk, vv in v.items())
        elif isinstance(v, list | tuple):
            v = ", ".join(_short(x) for x in v) if len(v) <= 3 else f"{len(v)}"
        elif k == "bytes" and isinstance(v, int):
            v = _size(v)
        elif isinstance(v, str) and v.startswith("/"):
            v = v.rsplit("/", 1)[-1]
        parts.append(f"{k}: {v}")
    return "; ".join(parts)


def _notes(details: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, object]]:
    """A statement an edit applied anyway but could not judge, which may
    undo it (`file:line`, why): one line each, for the user to check."""
    return [("note", f"{step}: {n}") for step, d in details.items() for n in d.get("notes") or []]


def _step_details(steps: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {s["step"]: s.get("details") or {} for s in steps}


def _drivers(d: Mapping[str, Any]) -> str:
    """The initrd's drivers for the root under Xen, in a few words."""
    parts = []
    if d.get("added"):
        parts.append(f"added {', '.join(d['added'])} ({len(d.get('files') or [])} files)")
    if d.get("unavailable"):
        parts.append(f"missing {', '.join(d['unavailable'])}")
    return "; ".join(parts) or "present"


def _short(x: object) -> str:
    """A path by its name; anything else (a line of a file, a rewrite) as is."""
    text = str(x)
    return text.rsplit("/", 1)[-1] if text.startswith("/") and " " not in text else text


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


# --- one renderer per command, each from the command's JSON document ---------


def _input_facts(facts: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The input's format and size, and an OVA's VM and disks."""
    size = facts.get("virtual_size")
    lines: list[tuple[str, object]] = [
        ("input", f"{facts.get('format')}" + (f", {size / 2**30:.2f} GiB virtual" if size else ""))]
    ova = facts.get("ova")
    if ova:
        disks = "; ".join(f"{n}: {d['file']}" + (" (system disk)" if n == ova["system_disk"] else "")
                          for n, d in enumerate(ova["disks"], 1))
        lines += [("OVA VM", ova.get("vm_name") or "(no name)"), ("OVA disks", disks)]
    return lines


def show_inspect(screen: Screen, doc: Mapping[str, Any]) -> None:
    show_partitions(screen, doc)
    screen.facts([
        *_input_facts(doc.get("input_facts") or {}),
        ("root", f"{_where(doc['root'])} ({doc['root']['reason']})"),
        ("boot", _boot_partition(doc)),
        ("VSA version", doc.get("vsa_version") or "unknown"),
        ("glibc", _glibc(doc)),
        ("eth0 MAC", "; ".join(f"{m['mac']} ({m['source']})" for m in doc.get("recorded_macs") or [])
         or "none recorded"),
        *_findings(doc.get("findings") or {}),
        *_kernel_args(doc.get("kernel_args")),
        *_data_disks(doc.get("data_disks")),
        ("kernel modules", ", ".join(doc.get("kernel_versions") or []) or "none"),
        ("boot kernels", ", ".join(doc.get("boot_kernels") or []) or "none"),
        *_storage_facts(doc),
        *([("bundle", doc["bundle"])] if doc.get("bundle") else []),
    ])
    show_steps(screen, "Edits", doc["edits"])


def _where(role: Mapping[str, Any]) -> str:
    if role.get("array"):
        return f"md array {role['array']}"
    return f"partition {role['partition']}"


def _boot_partition(doc: Mapping[str, Any]) -> str:
    if doc.get("boot"):
        return f"partition {doc['boot']['partition']} ({doc['boot']['reason']})"
    if doc.get("boot_in_root"):
        return f"/boot is a directory of the root, {_where(doc['root'])} (no boot partition)"
    return "not found"


def _storage_facts(doc: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The init system, md RAID and LVM lines of inspect."""
    init = doc.get("init_system") or {}
    evidence = ", ".join(init.get("evidence") or [])
    md = "; ".join(f"array {a['name'] or '(no name)'} uuid {a['uuid']}: partitions "
                   + ", ".join(str(n) for n in a["members"]) for a in doc.get("md_arrays") or [])
    lvm = "; ".join(f"PV on partition {v['partition']} uuid {v['uuid']}" for v in doc.get("lvm") or [])
    return [
        ("init system", f"{init.get('name', 'unknown')}" + (f" ({evidence})" if evidence else "")),
        ("md RAID", md or "none"),
        ("LVM", lvm or "none"),
    ]


def _findings(found: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The findings of inspect a user should see before converting."""
    lines: list[tuple[str, object]] = []
    console = found.get("console") or {}
    if "tty1" in console:
        lines.append(("tty1 runs", console["tty1"] or "nothing"))
        lines.append(("hvc0 will run", f"{console['hvc0']} ({console['file']})"))
    lines += [("other gettys", said) for said in console.get("gettys") or []]
    if console.get("serial"):
        lines.append(("serial console", console["serial"]))
    fstab = found.get("fstab") or {}
    rewritten = [f"{r['file']}:{r['line']} {r['from'].split()[0]} -> {r['to'].split()[0]}"
                 for r in fstab.get("rewritten") or []]
    lines.append(("names to rewrite", "; ".join(rewritten) or "none"))
    lines += [("warning", w) for w in fstab.get("warnings") or []]
    lines += [(f"{step} stops", f["error"]) for step, f in found.items() if "error" in f]
    return lines + _notes(found)


def _kernel_args(args: Mapping[str, Any] | None) -> list[tuple[str, object]]:
    """The VSA's kernel arguments: where from, kept, dropped and why, added."""
    if not args:
        return []
    dropped = "; ".join(f"{d['arg']} ({d['why']})" for d in args["dropped"])
    return [("kernel args from", args["source"]),
            ("kernel args kept", " ".join(args["kept"]) or "none"),
            ("kernel args dropped", dropped or "none"),
            ("kernel args added", " ".join([*args["added"], *args.get("extra", [])]))]


def _data_disks(slots: Mapping[str, Any] | None) -> list[tuple[str, object]]:
    if not slots:
        return []
    xen = [s["xen"] for s in slots["slots"]]
    return [("data-disk slots", f"{slots['count']} ({xen[0]}..{xen[-1]}) from {slots['source']}")]


def _glibc(doc: Mapping[str, Any]) -> str:
    g = doc.get("glibc")
    if not g:
        return "not read"
    done = "vsyscall=emulate on the kernel command line" if g["vsyscall_emulate"] else "no option needed"
    return f"{g['version'] or 'unknown'} ({g['source']}): {done}"


def show_verify(screen: Screen, doc: Mapping[str, Any]) -> None:
    show_steps(screen, f"Postconditions on {doc['image']}", doc["edits"])
    if doc["missing"]:
        screen.console.print(f"[red]not converted:[/] missing {', '.join(doc['missing'])}")
    else:
        screen.console.print("[green]every edit is in place[/]")


def show_convert(screen: Screen, doc: Mapping[str, Any]) -> None:
    title = "Plan (dry run: nothing written)" if doc.get("dry_run") else "What changed"
    show_steps(screen, title, doc["steps"])
    notes = _notes(_step_details(doc["steps"]))
    if doc.get("dry_run"):
        if notes:
            screen.facts(notes)
        return
    out = doc["outputs"]
    screen.facts([
        *_input_facts(doc.get("input_facts") or {}),
        ("disk", f"{', '.join(out['system_disks'])} ({out['format']}, root = {doc['root_device']})"),
        ("initrd", out["initrd"]),
        ("xl config", out["cfg"]),
        ("kernel", f"{doc['kernel']['path']} ({doc['kernel']['version']})"),
        ("boot", _boot(doc["xl"])),
        ("domain", f"{doc['xl']['name']}  uuid {doc['xl']['uuid']}  mac {doc['xl']['mac']}"),
        ("MAC from", doc["xl"].get("mac_source", "")),
        ("glibc", _glibc(doc)),
        *_command_line(doc),
        *_initrd_drivers(doc),
        ("motherboard UUID", f"{doc['motherboard_uuid']} (without /sys/hypervisor/uuid: "
                             f"{doc['motherboard_uuid_fallback']})"),
        ("time", ", ".join(f"{k} {v:.1f} s" for k, v in doc["timings"].items())),
        *notes,
    ])


def _boot(xl: Mapping[str, Any]) -> str:
    own = f"boots the disk's own copies ({bootmenu.OWN_DIR}) from {bootmenu.GRUB_CFG}"
    how = {"direct": "the xl config names the kernel and initrd above, on this host",
           "pygrub": f"pygrub {own}", "pvgrub": f"pvgrub2 {own}"}
    return f"{xl['type'].upper()}, {xl['boot']}: {how[xl['boot']]}"


def _command_line(doc: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The guest's kernel command line, and what of the VSA's it dropped."""
    xl = next((s for s in doc["steps"] if s["step"] == "xl"), None)
    details = xl["details"] if xl else {}
    if "command_line" not in details:
        return []
    dropped = " ".join(d["arg"] for d in details["kernel_args"]["dropped"])
    return [("command line", details["command_line"]), ("VSA args dropped", dropped or "none")]


def _initrd_drivers(doc: Mapping[str, Any]) -> list[tuple[str, object]]:
    """Why the initrd can (or cannot) mount the root under Xen."""
    step = next((s for s in doc["steps"] if s["step"] == "initrd"), None)
    drivers = step and step["details"].get("drivers")
    return [("initrd drivers", drivers["why"])] if drivers else []


def show_initrd(screen: Screen, doc: Mapping[str, Any]) -> None:
    screen.facts([
        ("output", doc["output"]),
        ("compression", doc.get("compression")),
        ("early segments", doc.get("early_segments")),
        ("entries", doc.get("entries")),
        ("added", ", ".join(doc.get("added") or []) or "nothing (already there)"),
        ("changed", ", ".join(doc.get("changed") or []) or "nothing"),
    ])


def show_batch(screen: Screen, doc: Mapping[str, Any],
               show_one: Callable[[Screen, Mapping[str, Any]], None]) -> None:
    """Several images: each one's result as it would be shown alone (with
    what they share), then one line per image saying which failed and why."""
    shared = {k: v for k, v in doc.items() if k not in ("images", "failed", "batch", "success")}
    rows = []
    for d in doc["images"]:
        error = d.get("error")
        if error is None:
            screen.console.print(f"\n[bold]{d['input']}[/]", highlight=False)
            show_one(screen, {**shared, **d})
        if error is not None:
            result, detail = "failed", error["message"]
        elif not d["success"]:
            result, detail = "not converted", "missing " + ", ".join(d.get("missing") or [])
        else:
            # a convert's disk, or the one a dry run would write
            disk = (d.get("outputs") or {}).get("image") or next(iter(d.get("output_files") or []), "")
            result, detail = "ok", disk
        rows.append((d["input"], result, detail))
    screen.table(f"{len(rows)} images in {doc.get('appliance_launches', 1)} appliance launch(es)",
              ["image", "result", "details"], rows)
    if doc.get("timings"):
        screen.facts([("shared time", ", ".join(f"{k} {v:.1f} s" for k, v in doc["timings"].items()))])
