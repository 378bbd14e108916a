"""Everything the user sees: progress and logs on stderr (rich on a terminal,
plain timestamped lines otherwise), and the result on stdout (a rich table, or
one JSON document with --json). Commands build the JSON document first; the
human tables are drawn from it, so both always say the same thing."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from vsaimage.xen import bootmenu


class _BytesColumn(DownloadColumn):
    """Sizes only for phases that count bytes; nothing for the others."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("nbytes") else Text("")


class Phase:
    """A step that takes seconds: shown as a progress line on a terminal, as a
    start and an end line otherwise. Its duration goes into the report."""

    def __init__(self, reporter: Reporter, name: str, task: TaskID | None) -> None:
        self._reporter = reporter
        self.name = name
        self._task = task
        self.started = time.monotonic()
        self.detail = ""

    def advance(self, amount: float) -> None:
        if self._task is not None and self._reporter.progress is not None:
            self._reporter.progress.advance(self._task, amount)

    def update(self, completed: float, total: float) -> None:
        if self._task is not None and self._reporter.progress is not None:
            self._reporter.progress.update(self._task, completed=completed, total=total)

    def total(self, total: float) -> None:
        if self._task is not None and self._reporter.progress is not None:
            self._reporter.progress.update(self._task, total=total)


class _Display:
    """What a reporter and the reporters of its images share: one progress
    display on stderr, and the lock that keeps lines from interleaving."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.lock = threading.Lock()


class Reporter:
    def __init__(self, *, verbosity: int = 0, stderr: IO[str] | None = None,
                 stdout: IO[str] | None = None) -> None:
        self.verbosity = verbosity
        self.err = Console(file=stderr or sys.stderr, stderr=stderr is None)
        out = stdout or sys.stdout
        # Piped or redirected results are read by people later, in wider
        # windows than rich's 80-column default for non-terminals.
        self.out = Console(file=out, width=None if out.isatty() else 120)
        self.interactive = self.err.is_terminal and not self.err.is_dumb_terminal
        self._display = _Display()
        self._lock = self._display.lock
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.label = ""

    @property
    def progress(self) -> Progress | None:
        return self._display.progress

    @progress.setter
    def progress(self, value: Progress | None) -> None:
        self._display.progress = value

    def for_image(self, name: str) -> Reporter:
        """A reporter for one image of several converted in one launch: its
        phases and warnings are shown after the image's name, so the progress
        says which image is being worked on, and are kept apart (its own
        timings and warnings) for that image's part of the result."""
        child = copy.copy(self)
        child.timings, child.warnings, child.label = {}, [], f"{name}: "
        return child

    # --- log lines (stderr) -------------------------------------------------

    def _line(self, text: str, style: str = "") -> None:
        with self._lock:
            if self.interactive:
                target = self.progress.console if self.progress else self.err
                target.print(text, style=style, highlight=False, markup=False)
            else:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                print(f"{stamp} {text}", file=self.err.file, flush=True)

    def info(self, text: str) -> None:
        if self.verbosity >= 0:
            self._line(text)

    def debug(self, text: str) -> None:
        if self.verbosity >= 1:
            self._line(text, "dim")

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self._line(f"warning: {self.label}{text}", "yellow")

    def error(self, text: str, hint: str | None = None) -> None:
        """One line on stderr, never timestamped, so scripts can show it as is."""
        line = f"vsaimage: error: {text}" + (f" ({hint})" if hint else "")
        with self._lock:
            if self.interactive:
                self.err.print(line, style="bold red", highlight=False, markup=False)
            else:
                print(line, file=self.err.file, flush=True)

    # --- phases -------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str, *, total: float | None = None, nbytes: bool = False) -> Iterator[Phase]:
        """Time a phase; `total` gives a bar (in bytes when `nbytes`)."""
        timed, name = name, self.label + name
        task = None
        with self._lock:
            if self.interactive and self.verbosity >= 0:
                if self.progress is None:
                    self.progress = self._new_progress()
                    self.progress.start()
                task = self.progress.add_task(name, total=total, nbytes=nbytes)
        if not self.interactive:
            self.info(f"{name}: started")
        ph = Phase(self, name, task)
        ok = False
        try:
            yield ph
            ok = True
        finally:
            elapsed = time.monotonic() - ph.started
            self.timings[timed] = round(elapsed, 2)
            with self._lock:
                if task is not None and self.progress is not None:
                    t = self.progress.tasks[task]
                    self.progress.update(task, completed=t.total or 1, total=t.total or 1,
                                         description=f"{name} {'✓' if ok else '✗'}")
            if not self.interactive:
                status = "done" if ok else "failed"
                self.info(f"{name}: {status} in {elapsed:.1f} s{' ' + ph.detail if ph.detail else ''}")

    def _new_progress(self) -> Progress:
        return Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("{task.description}"),
            BarColumn(),
            _BytesColumn(binary_units=True),
            TimeElapsedColumn(),
            console=self.err,
            transient=False,
        )

    def close(self) -> None:
        with self._lock:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    # --- results (stdout) ---------------------------------------------------

    def json(self, doc: Mapping[str, Any]) -> None:
        self.close()
        print(json.dumps(doc, indent=2, sort_keys=False), file=self.out.file, flush=True)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.close()
        t = Table(title=title, title_justify="left")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        self.out.print(t)

    def facts(self, pairs: Sequence[tuple[str, object]]) -> None:
        """Key/value lines under a table."""
        self.close()
        width = max(len(k) for k, _ in pairs)
        for k, v in pairs:
            self.out.print(f"{k.ljust(width)}  {'' if v is None else v}", highlight=False,
                           markup=False, soft_wrap=True)


STATUS_STYLE = {
    "applied": "green",
    "already applied": "green",
    "apply": "yellow",
    "not applied": "red",
    "skipped": "dim",
    "not used": "dim",
}


def show_partitions(rep: Reporter, doc: Mapping[str, Any]) -> None:
    roles = {doc["root"]["partition"]: "root"}
    if doc.get("boot"):
        roles[doc["boot"]["partition"]] = "boot"
    rows = [
        (p["number"], p["start"], _size(p["size"]), p["mbr_id"], p["fstype"], p["label"],
         roles.get(p["number"], ""))
        for p in doc["partitions"]
    ]
    rep.table(f"Partitions of {doc['image']}",
              ["#", "start", "size", "type", "filesystem", "label", "role"], rows)


def show_steps(rep: Reporter, title: str, steps: Sequence[Mapping[str, Any]]) -> None:
    """Steps with their status; a convert's (planned or carried out) also
    with the files each writes."""
    with_changes = any("changes" in s for s in steps)
    rows = []
    for s in steps:
        style = STATUS_STYLE.get(s["status"], "")
        status = f"[{style}]{s['status']}[/]" if style else s["status"]
        changes = ("\n".join(_change(c) for c in s.get("changes", [])),) if with_changes else ()
        rows.append((s["step"], s["title"], status, *changes, _details(s.get("details", {}))))
    rep.close()
    t = Table(title=title, title_justify="left")
    for c in ("step", "what", "status", *(("changes",) if with_changes else ()), "details"):
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    rep.out.print(t)


def _change(change: Mapping[str, Any]) -> str:
    """One change of a step as a line: the guest path or host file it writes."""
    if "install_modules" in change:
        return f"{change['install_modules']}/ (modules)"
    return str(change.get("write") or change.get("output"))


# Details that the step's title already says, or that only the JSON needs.
_QUIET_KEYS = {"file", "dir", "rules", "script", "devices", "version", "input_bytes", "output_bytes",
               "module_versions", "input_compression", "already_applied", "entries", "early_segments"}


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


def show_inspect(rep: Reporter, doc: Mapping[str, Any]) -> None:
    show_partitions(rep, doc)
    rep.facts([
        *_input_facts(doc.get("input_facts") or {}),
        ("root", f"partition {doc['root']['partition']} ({doc['root']['reason']})"),
        ("boot", f"partition {doc['boot']['partition']} ({doc['boot']['reason']})"
         if doc.get("boot") else "not found"),
        ("VSA version", doc.get("vsa_version") or "unknown"),
        ("glibc", _glibc(doc)),
        ("eth0 MAC", "; ".join(f"{m['mac']} ({m['source']})" for m in doc.get("recorded_macs") or [])
         or "none recorded"),
        *_findings(doc.get("findings") or {}),
        ("kernel modules", ", ".join(doc.get("kernel_versions") or []) or "none"),
        ("boot kernels", ", ".join(doc.get("boot_kernels") or []) or "none"),
        *_storage_facts(doc),
        *([("bundle", doc["bundle"])] if doc.get("bundle") else []),
    ])
    show_steps(rep, "Edits", doc["edits"])


def _storage_facts(doc: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The init system, md RAID and LVM lines of inspect."""
    init = doc.get("init_system") or {}
    evidence = ", ".join(init.get("evidence") or [])
    md = "; ".join(f"array {a['name'] or '(no name)'} uuid {a['uuid']}: partitions "
                   + ", ".join(str(n) for n in a["members"]) for a in doc.get("md_arrays") or [])
    lvm = "; ".join(f"PV on partition {v['partition']} uuid {v['uuid']}" for v in doc.get("lvm") or [])
    return [
        ("init system", f"{init.get('guess', 'unknown')}" + (f" ({evidence})" if evidence else "")),
        ("md RAID", md or "none"),
        ("LVM", lvm or "none"),
    ]


def _findings(found: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The findings of inspect a user should see before converting."""
    lines: list[tuple[str, object]] = []
    console = found.get("console") or {}
    if "tty1" in console:
        lines.append(("tty1 runs", console["tty1"] or "nothing"))
    fstab = found.get("fstab") or {}
    rewritten = [f"{r['file']}:{r['line']} {r['from'].split()[0]} -> {r['to'].split()[0]}"
                 for r in fstab.get("rewritten") or []]
    lines.append(("names to rewrite", "; ".join(rewritten) or "none"))
    lines += [("warning", w) for w in fstab.get("warnings") or []]
    lines += [(f"{step} stops", f["error"]) for step, f in found.items() if "error" in f]
    return lines


def _glibc(doc: Mapping[str, Any]) -> str:
    g = doc.get("glibc")
    if not g:
        return "not read"
    done = "vsyscall=emulate on the kernel command line" if g["vsyscall_emulate"] else "no option needed"
    return f"{g['version'] or 'unknown'} ({g['source']}): {done}"


def show_verify(rep: Reporter, doc: Mapping[str, Any]) -> None:
    show_steps(rep, f"Postconditions on {doc['image']}", doc["edits"])
    if doc["missing"]:
        rep.out.print(f"[red]not converted:[/] missing {', '.join(doc['missing'])}")
    else:
        rep.out.print("[green]every edit is in place[/]")


def show_convert(rep: Reporter, doc: Mapping[str, Any]) -> None:
    title = "Plan (dry run: nothing written)" if doc.get("dry_run") else "What changed"
    show_steps(rep, title, doc["steps"])
    if doc.get("dry_run"):
        return
    out = doc["outputs"]
    rep.facts([
        *_input_facts(doc.get("input_facts") or {}),
        ("disk", f"{out['image']} ({out['format']}, root = /dev/xvda{doc['root_partition']})"),
        ("initrd", out["initrd"]),
        ("xl config", out["cfg"]),
        ("kernel", f"{doc['kernel']['path']} ({doc['kernel']['version']})"),
        ("boot", _boot(doc["xl"])),
        ("domain", f"{doc['xl']['name']}  uuid {doc['xl']['uuid']}  mac {doc['xl']['mac']}"),
        ("MAC from", doc["xl"].get("mac_source", "")),
        ("glibc", _glibc(doc)),
        *_initrd_drivers(doc),
        ("motherboard UUID", f"{doc['motherboard_uuid']} (without /sys/hypervisor/uuid: "
                             f"{doc['motherboard_uuid_fallback']})"),
        ("time", ", ".join(f"{k} {v:.1f} s" for k, v in doc["timings"].items())),
    ])


def _boot(xl: Mapping[str, Any]) -> str:
    own = f"boots the disk's own copies ({bootmenu.OWN_DIR}) from {bootmenu.GRUB_CFG}"
    how = {"direct": "the xl config names the kernel and initrd above, on this host",
           "pygrub": f"pygrub {own}", "pvgrub": f"pvgrub2 {own}"}
    return f"{xl['type'].upper()}, {xl['boot']}: {how[xl['boot']]}"


def _initrd_drivers(doc: Mapping[str, Any]) -> list[tuple[str, object]]:
    """Why the initrd can (or cannot) mount the root under Xen."""
    step = next((s for s in doc["steps"] if s["step"] == "initrd"), None)
    drivers = step and step["details"].get("drivers")
    return [("initrd drivers", drivers["why"])] if drivers else []


def show_initrd(rep: Reporter, doc: Mapping[str, Any]) -> None:
    rep.facts([
        ("output", doc["output"]),
        ("compression", doc.get("compression")),
        ("early segments", doc.get("early_segments")),
        ("entries", doc.get("entries")),
        ("added", ", ".join(doc.get("added") or []) or "nothing (already there)"),
        ("changed", ", ".join(doc.get("changed") or []) or "nothing"),
    ])


def show_batch(rep: Reporter, doc: Mapping[str, Any],
               show_one: Callable[[Reporter, dict[str, Any]], None]) -> None:
    """Several images: each one's result as it would be shown alone (with
    what they share), then one line per image saying which failed and why."""
    shared = {k: v for k, v in doc.items() if k not in ("images", "failed", "batch", "success")}
    rows = []
    for d in doc["images"]:
        error = d.get("error")
        if error is None:
            rep.out.print(f"\n[bold]{d['input']}[/]", highlight=False)
            show_one(rep, {**shared, **d})
        if error is not None:
            result, detail = "failed", error["message"]
        elif not d["success"]:
            result, detail = "not converted", "missing " + ", ".join(d.get("missing") or [])
        else:
            # a convert's disk, or the one a dry run would write
            disk = (d.get("outputs") or {}).get("image") or next(iter(d.get("output_files") or []), "")
            result, detail = "ok", disk
        rows.append((d["input"], result, detail))
    rep.table(f"{len(rows)} images in {doc.get('appliance_launches', 1)} appliance launch(es)",
              ["image", "result", "details"], rows)
    if doc.get("timings"):
        rep.facts([("shared time", ", ".join(f"{k} {v:.1f} s" for k, v in doc["timings"].items()))])
