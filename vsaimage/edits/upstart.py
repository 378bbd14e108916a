"""The console edit under upstart (RHEL 6: LeftHand OS 11 and 12), where
/etc/inittab holds only the default runlevel and an hvc0 line added there
is never read.

RHEL 6 runs its gettys from jobs: start-ttys.conf starts the instance job
tty.conf (`instance $TTY`, `exec /sbin/mingetty $TTY`) for each device of
ACTIVE_CONSOLES (/etc/sysconfig/init: `/dev/tty[1-6]`); a VSA may instead
run its console program from a job of its own naming tty1. Upstart 0.6.5
reads no override files, so the edit changes only files it reads, and
keeps what it replaces:

- a job of vsaimage's own, /etc/init/vsaimage-hvc0.conf, runs on hvc0 what
  runs on tty1 (the device changed: `$TTY` and tty1 become hvc0 in the
  form tty1 had), started and stopped as the tty job is, respawned;
- ACTIVE_CONSOLES becomes empty (the old assignment kept in a comment on
  its line), and a job of the VSA's own naming tty1 has its `start on`
  commented out: a domU has no VGA console to run them on;
- RHEL's serial.conf starts an agetty on the primary console when udev's
  console_check says it is serial-like, which its 10-console.rules asks of
  hvc0 too: an /etc/udev/rules.d copy of those rules without the hvc and
  xvc lines keeps that second getty off hvc0.

Pure: works on a Snapshot.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from vsaimage.edits import Change, Snapshot, text_write
from vsaimage.edits.textfile import ensure_final_newline, newline_of, split_lines
from vsaimage.errors import EditError

JOBS = "/etc/init/*.conf"
SYSCONFIG = "/etc/sysconfig/init"
JOB = "/etc/init/vsaimage-hvc0.conf"
# RHEL's udev rules running console_check on serial-like consoles; a file of
# the same name in /etc/udev/rules.d replaces the one in /lib.
LIB_RULES = "/lib/udev/rules.d/10-console.rules"
ETC_RULES = "/etc/udev/rules.d/10-console.rules"
READS = (JOBS, SYSCONFIG, LIB_RULES, ETC_RULES)
SERIAL_EVENT = "fedora.serial-console-available"
MARKER = "# vsaimage:"
DEFAULT_START = "stopped rc RUNLEVEL=[2345]"  # RHEL 6's start-ttys.conf
DEFAULT_STOP = "runlevel [S016]"  # and its tty.conf

_SCRIPT_KEYS = ("script", "pre-start script", "post-start script", "pre-stop script", "post-stop script")
_TWO_WORDS = {"start": ("on",), "stop": ("on",), "normal": ("exit",),
              **dict.fromkeys(("pre-start", "post-start", "pre-stop", "post-stop"), ("exec", "script"))}
_TTY1 = re.compile(r"(?<!\S)(/dev/|)tty1(?!\S)")
_TTY_VAR = re.compile(r"\$(?:TTY\b|\{TTY\})")
_STARTS_TTY = re.compile(r"(?:^|[\s;&|(])(?:initctl\s+)?start\s+([\w.-]+)\s[^\n]*\bTTY=")
_SOURCES_SYSCONFIG = re.compile(rf"(?:^|[\s;&|])(?:\.|source)\s+{re.escape(SYSCONFIG)}(?=\s|;|$)", re.M)
_ACTIVE = re.compile(r"\s*ACTIVE_CONSOLES=(.*)")
_OURS = re.compile(rf"ACTIVE_CONSOLES= +{MARKER} [^\n]*; was: (.*)")
_DISABLED = re.compile(rf"{MARKER} not started under Xen \((\d+) lines? below\)")
_HVC0 = re.compile(r"(?<![\w/])(/dev/)?hvc0\b")
_RULE_KERNEL = re.compile(r'KERNEL=="([^"]*)"')


# --- job files --------------------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    key: str  # "exec", "start on", "pre-start script", "env", ...
    value: str  # the rest of the stanza; a script's lines
    first: int  # index of its first line in the file
    last: int  # of its last line


@dataclass(frozen=True)
class Job:
    path: str
    text: str  # the file as it is
    stanzas: tuple[Stanza, ...]  # as the VSA had them (a `start on` of ours commented out counts)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path).removesuffix(".conf")

    def get(self, key: str) -> Stanza | None:
        """The stanza `key`; a later one replaces an earlier, as in upstart."""
        found = self.all(key)
        return found[-1] if found else None

    def all(self, key: str) -> list[Stanza]:
        return [s for s in self.stanzas if s.key == key]

    @property
    def main(self) -> Stanza | None:
        """The main process: its `exec` or `script`, whichever comes last."""
        found = [s for s in self.stanzas if s.key in ("exec", "script")]
        return found[-1] if found else None


def _open_parens(text: str) -> int:
    return text.count("(") - text.count(")")


def parse_job(path: str, text: str) -> Job:
    """The stanzas of an upstart job file: one per line, `start on` and
    `stop on` continued while a parenthesis is open or a line ends in a
    backslash, scripts up to their `end script`. A `start on` this edit
    commented out is read as it was."""
    lines = [line.rstrip("\r\n") for line in split_lines(restored(text))]
    stanzas: list[Stanza] = []
    i = 0
    while i < len(lines):
        body = lines[i].strip()
        if not body or body.startswith("#"):
            i += 1
            continue
        words = body.split(None, 2)
        if words[0] in _TWO_WORDS and len(words) > 1 and words[1] in _TWO_WORDS[words[0]]:
            key, rest = f"{words[0]} {words[1]}", words[2] if len(words) > 2 else ""
        else:
            key, rest = words[0], body[len(words[0]):].strip()
        first = i
        if key in _SCRIPT_KEYS:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "end script"), len(lines))
            stanzas.append(Stanza(key, "\n".join(lines[i + 1:end]), first, end))
            i = end + 1
            continue
        while key in ("start on", "stop on") and i + 1 < len(lines) and (
                _open_parens(rest) > 0 or rest.endswith("\\")):
            i += 1
            rest = rest.removesuffix("\\").rstrip() + " " + lines[i].strip()
        stanzas.append(Stanza(key, rest, first, i))
        i += 1
    return Job(path, text, tuple(stanzas))


def restored(text: str) -> str:
    """A job file as it was before disable_job (the inverse of it)."""
    lines = split_lines(text)
    out: list[str] = []
    uncomment = 0
    for line in lines:
        m = _DISABLED.match(line.strip())
        if m:
            uncomment = int(m.group(1))
            continue
        if uncomment and line.startswith("#"):
            line = line[1:]
            uncomment -= 1
        out.append(line)
    return "".join(out)


def disable_job(job: Job) -> str:
    """The job file with its `start on` lines commented out, under a line
    saying why and how many; unchanged when they are already."""
    start = job.get("start on")
    if start is None or restored(job.text) != job.text:
        return job.text
    lines = split_lines(job.text)
    count = start.last - start.first + 1
    for n in range(start.first, start.last + 1):
        lines[n] = "#" + lines[n]
    said = f"{count} line{'s' if count > 1 else ''} below"
    lines.insert(start.first, f"{MARKER} not started under Xen ({said}): its program runs on hvc0 "
                              f"({JOB}){newline_of(job.text)}")
    return "".join(lines)


def jobs(snap: Snapshot) -> list[Job]:
    """Every job under /etc/init but vsaimage's own."""
    return [parse_job(p, text) for p in snap.glob(JOBS) if p != JOB and (text := snap.text(p)) is not None]


# --- what runs on tty1 ------------------------------------------------------


@dataclass(frozen=True)
class Consoles:
    """ACTIVE_CONSOLES as a starter job's script sees it."""

    value: str
    source: str  # where the value comes from, in words
    sysconfig: bool  # the script reads /etc/sysconfig/init (where an edit counts)
    line: int | None  # the assignment that counts there, if any


@dataclass(frozen=True)
class Tty1:
    """What upstart runs on tty1, and the jobs that do it."""

    job: Job  # whose main process runs there
    tty: str | None  # the $TTY it gets there ("/dev/tty1"); None: it names tty1 itself
    starter: Job | None  # the job starting it for each of ACTIVE_CONSOLES
    consoles: Consoles | None

    @property
    def main(self) -> Stanza:
        assert self.job.main is not None
        return self.job.main

    @property
    def command(self) -> str:
        """The main process (a command, or a script's lines) as it runs on
        tty1: $TTY replaced by its value there."""
        return _TTY_VAR.sub(self.tty, self.main.value) if self.tty else self.main.value

    def describe(self) -> str:
        how = f"{self.job.path} runs `exec {self.main.value}`" if self.main.key == "exec" else \
            f"{self.job.path} runs a script"
        if self.starter is None or self.consoles is None:
            return f"{how} on tty1"
        return (f"{how} with TTY={self.tty}, started by {self.starter.path} for "
                f"ACTIVE_CONSOLES={self.consoles.value} ({self.consoles.source})")


def _value(assignment: str) -> str:
    """A shell assignment's right-hand side, without quotes or a comment."""
    text = assignment.split(" #", 1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def consoles(starter: Job, sysconfig: str | None) -> Consoles | None:
    """ACTIVE_CONSOLES as `starter`'s script sees it: the job's env default,
    replaced by /etc/sysconfig/init's last assignment when the script
    sources that file (one of ours stands for the one it replaced)."""
    main = starter.main
    env = [s.value.split("=", 1)[1] for s in starter.all("env") if s.value.startswith("ACTIVE_CONSOLES=")]
    default = Consoles(_value(env[-1]), f"{starter.path}'s env", False, None) if env else None
    if main is None or sysconfig is None or not _SOURCES_SYSCONFIG.search(main.value):
        return default
    for n, line in reversed(list(enumerate(split_lines(sysconfig)))):
        body = line.rstrip("\r\n")
        ours = _OURS.fullmatch(body)
        if ours:
            was = ours.group(1)
            if was.startswith("ACTIVE_CONSOLES="):
                return Consoles(_value(was.split("=", 1)[1]), SYSCONFIG, True, n)
            return Consoles(default.value if default else "", f"{starter.path}'s env", True, n)
        m = _ACTIVE.fullmatch(body)
        if m:
            return Consoles(_value(m.group(1)), SYSCONFIG, True, n)
    return Consoles(default.value, default.source, True, None) if default else None


def _tty1_value(value: str) -> str | None:
    """The $TTY a loop over ACTIVE_CONSOLES gives tty1, if a word names it."""
    for word in value.split():
        tty1 = "/dev/tty1" if word.startswith("/dev/") else "tty1"
        if fnmatchcase(tty1, word):
            return tty1
    return None


def _starts_tty(job: Job) -> str | None:
    """The job that `job`'s script starts with a TTY= (start-ttys: tty)."""
    main = job.main
    m = _STARTS_TTY.search(main.value) if main is not None and main.key == "script" else None
    return m.group(1) if m else None


def find_tty1(all_jobs: Sequence[Job], sysconfig: str | None) -> Tty1:
    """The job that runs something on tty1: one naming tty1 itself, else the
    instance job a starter runs for each of ACTIVE_CONSOLES, when tty1 is
    among them. EditError naming what was read when there is none."""
    own = [j for j in all_jobs if j.main is not None and j.get("start on") is not None
           and _TTY1.search(j.main.value)]
    if own:
        return Tty1(own[0], None, None, None)
    by_name = {j.name: j for j in all_jobs}
    reasons = []
    for starter in all_jobs:
        name = _starts_tty(starter)
        if name is None:
            continue
        job = by_name.get(name)
        found = consoles(starter, sysconfig)
        if job is None or job.main is None or found is None:
            reasons.append(f"{starter.path} starts {name} for devices vsaimage cannot tell")
            continue
        tty = _tty1_value(found.value)
        if tty is None:
            reasons.append(f"{starter.path} starts {name} for ACTIVE_CONSOLES={found.value} "
                           f"({found.source}), which has no tty1")
            continue
        return Tty1(job, tty, starter, found)
    read = f"{len(all_jobs)} job files in /etc/init" + (f" and {SYSCONFIG}" if sysconfig is not None else "")
    why = "; ".join(reasons) or "no job under /etc/init names tty1 or starts one for it"
    raise EditError(f"upstart: {why} (read {read})", hint="--skip console converts without this edit")


# --- the changes ------------------------------------------------------------


def job_text(tty1: Tty1, key: str, process: str, why: str) -> str:
    """vsaimage's job running `process` (an exec line's command, or a
    script) on hvc0, started and stopped as the tty1 job is (its
    starter's `start on` when it has none), with its env."""
    start = tty1.job.get("start on") or (tty1.starter.get("start on") if tty1.starter else None)
    stop = tty1.job.get("stop on")
    lines = [f"{MARKER} the VSA's console on the Xen console hvc0: {why}.",
             f"# On tty1, {tty1.describe()}.",
             f"start on {start.value if start else DEFAULT_START}",
             f"stop on {stop.value if stop else DEFAULT_STOP}",
             "",
             "respawn",
             *(f"env {s.value}" for s in tty1.job.all("env") if not s.value.startswith("TTY=")),
             *(["script", *process.split("\n"), "end script"] if key == "script" else [f"exec {process}"])]
    return "\n".join(lines) + "\n"


def quiet_consoles(tty1: Tty1, all_jobs: Sequence[Job], snap: Snapshot) -> tuple[list[Change], list[str]]:
    """The changes that start no getty on tty1..tty6: the tty1 job's `start
    on` commented out when it is a job of the VSA's own, ACTIVE_CONSOLES
    emptied where the starter reads it; each said in words."""
    changes: list[Change] = []
    said = []
    if tty1.tty is None:
        changes += text_write(snap, tty1.job.path, disable_job(tty1.job))
        said.append(f"{tty1.job.path}: `start on` commented out")
    starter = tty1.starter or next((j for j in all_jobs if _starts_tty(j)), None)
    sysconfig = snap.text(SYSCONFIG)
    found = consoles(starter, sysconfig) if starter is not None else None
    if starter is None or found is None:
        return changes, said
    if found.sysconfig and sysconfig is not None:
        changes += text_write(snap, SYSCONFIG, empty_consoles(sysconfig, found))
        said.append(f"ACTIVE_CONSOLES={found.value} ({found.source}) emptied in {SYSCONFIG}")
    else:
        said.append(f"{starter.path} does not read {SYSCONFIG}: its gettys on ACTIVE_CONSOLES={found.value} "
                    "stay (on VGA consoles a domU does not show)")
    return changes, said


def empty_consoles(sysconfig: str, found: Consoles) -> str:
    """/etc/sysconfig/init with ACTIVE_CONSOLES empty: the assignment that
    counts replaced by ours (naming it), or ours appended after the rest
    when there is none (the job's default then counted)."""
    ours = f"ACTIVE_CONSOLES=  {MARKER} no getty on a VGA console under Xen (hvc0: {JOB}); was: "
    if found.line is None:
        return ensure_final_newline(sysconfig) + ours + f"unset ({found.source})" + newline_of(sysconfig)
    lines = split_lines(sysconfig)
    old = lines[found.line]
    body = old.rstrip("\r\n")
    if _OURS.fullmatch(body):
        return sysconfig
    lines[found.line] = ours + body.strip() + old[len(body):]
    return "".join(lines)


def serial_rules(snap: Snapshot, all_jobs: Sequence[Job]) -> tuple[list[Change], str | None]:
    """When a job starts on fedora.serial-console-available (RHEL's
    serial.conf), the udev rules that make console_check emit it for the
    Xen console are turned off in /etc/udev/rules.d/10-console.rules (a
    copy of /lib's when /etc has none): two gettys would fight over hvc0."""
    serial = [j for j in all_jobs if (s := j.get("start on")) is not None and SERIAL_EVENT in s.value]
    etc, lib = snap.text(ETC_RULES), snap.text(LIB_RULES)
    text = etc if etc is not None else lib
    if not serial or text is None:
        return [], None
    new = without_hvc_checks(text)
    if new == text and (etc is None or not etc.startswith(MARKER)):
        return [], None  # nothing asks console_check about hvc0
    if etc is None:
        new = (f"{MARKER} {LIB_RULES} without console_check on the Xen console:\n"
               f"# {serial[0].path} would start a second getty on hvc0.\n") + new
    return text_write(snap, ETC_RULES, new), (
        f"console_check on hvc0 ({LIB_RULES}) off in {ETC_RULES}: {serial[0].path} would start "
        "an agetty on hvc0")


def without_hvc_checks(text: str) -> str:
    """udev rules with the lines running console_check on a device named as
    the Xen console (hvc0; xvc0 on older kernels) commented out."""
    out = []
    for line in split_lines(text):
        body = line.strip()
        m = _RULE_KERNEL.search(body)
        if (not body.startswith("#") and "console_check" in body and m is not None
                and any(fnmatchcase(dev, m.group(1)) for dev in ("hvc0", "xvc0"))):
            line = "#" + line
        out.append(line)
    return "".join(out)


def other_hvc0_jobs(all_jobs: Sequence[Job]) -> list[str]:
    """Jobs not ours whose main process names hvc0: two gettys on one
    console fight over it."""
    return [j.path for j in all_jobs if (m := j.main) is not None and _HVC0.search(m.value)]
