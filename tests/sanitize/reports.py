#!/usr/bin/env python3
"""reports.py: find sanitizer and valgrind reports that involve the shim.

    reports.py sanitizer FILE...   stderr captures: AddressSanitizer, LeakSanitizer
                                   and UndefinedBehaviorSanitizer reports
    reports.py valgrind FILE...    valgrind --xml=yes files: every error, and
                                   definitely lost leaks

A report involves the shim when its first line or one of its stack frames
names a source file under shim/ or the object libstarttls-shim*.so.  Prints
one line per distinct report, "OURS ..." or "FOREIGN ...", with how many times
it was seen and the first file; exits 1 when any report is ours, else 0.
"""
import collections
import re
import sys
import xml.etree.ElementTree as ET

OURS_RE = re.compile(r"(^|[\s/(])shim/[A-Za-z0-9_-]+\.[ch]:\d+|libstarttls-shim")
FRAME_RE = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ in (\S+) (\S+)")
START_RE = re.compile(r"^(==\d+==ERROR: (AddressSanitizer|LeakSanitizer)|\S+:\d+:\d+: runtime error: "
                      r"|(Direct|Indirect) leak of \d+ byte)")


def sanitizer_blocks(text):
    """Split a capture into report blocks: (headline, lines)."""
    blocks, cur = [], None
    for line in text.splitlines():
        if START_RE.search(line):
            if cur:
                blocks.append(cur)
            cur = [line]
        elif cur is not None:
            if line.startswith("SUMMARY:") or (line.strip() == "" and len(cur) > 1
                                              and not cur[0].startswith("==")):
                blocks.append(cur)
                cur = None
            else:
                cur.append(line)
    if cur:
        blocks.append(cur)
    return blocks


def describe(block):
    head = block[0]
    if "LeakSanitizer" in head:
        return None          # the "Direct leak" blocks below it carry the stacks
    m = re.search(r"ERROR: AddressSanitizer: (\S+)", head)
    kind = m.group(1) if m else head.split("runtime error: ")[-1] if "runtime error" in head else head
    if "runtime error" in head:
        kind = "UBSan: " + head.strip()
        kind = re.sub(r"^UBSan: /.*?/(shim/)", r"UBSan: \1", kind)
    elif "leak of" in head:
        kind = "LeakSanitizer: " + re.sub(r"\d+ byte\(s\) in \d+ object\(s\)", "N bytes", head.strip())
    else:
        kind = "AddressSanitizer: " + kind
    where = ""
    for line in block[1:]:
        fm = FRAME_RE.match(line)
        if fm and OURS_RE.search(line):
            where = " at %s %s" % (fm.group(1), re.sub(r".*/(shim/)", r"\1", fm.group(2)))
            break
    ours = bool(OURS_RE.search(head)) or any(OURS_RE.search(l) for l in block[1:] if FRAME_RE.match(l))
    return ours, kind + where


def scan_sanitizer(files):
    seen = collections.OrderedDict()
    for f in files:
        try:
            text = open(f, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for block in sanitizer_blocks(text):
            d = describe(block)
            if d is None:
                continue
            ent = seen.setdefault(d, [0, f])
            ent[0] += 1
    return seen


def scan_valgrind(files):
    seen = collections.OrderedDict()
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError):
            # a killed process leaves a truncated file: read the complete errors
            try:
                text = open(f, encoding="utf-8", errors="replace").read()
                root = ET.fromstring("<r>" + "".join(re.findall(r"<error>.*?</error>", text, re.S)) + "</r>")
            except (ET.ParseError, OSError):
                continue
        for err in root.iter("error"):
            kind = err.findtext("kind") or "?"
            if kind.startswith("Leak_") and kind != "Leak_DefinitelyLost":
                continue
            frames = err.findall("./stack/frame")
            ours = any("libstarttls-shim" in (fr.findtext("obj") or "") for fr in frames)
            where = ""
            for fr in frames:
                if "libstarttls-shim" in (fr.findtext("obj") or ""):
                    where = " at %s %s:%s" % (fr.findtext("fn") or "?", fr.findtext("file") or "?",
                                              fr.findtext("line") or "?")
                    break
            what = err.findtext("what") or err.findtext("./xwhat/text") or ""
            what = re.sub(r"\d[\d,]* (\(\d[\d,]* direct, \d[\d,]* indirect\) )?bytes in \d[\d,]* blocks",
                          "N bytes", what)
            what = re.sub(r"loss record \d[\d,]* of \d[\d,]*", "loss record", what)
            seen.setdefault((ours, "valgrind %s: %s%s" % (kind, what, where)), [0, f])[0] += 1
    return seen


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("sanitizer", "valgrind"):
        print(__doc__, file=sys.stderr)
        return 2
    seen = (scan_sanitizer if sys.argv[1] == "sanitizer" else scan_valgrind)(sys.argv[2:])
    bad = 0
    for (ours, desc), (count, first) in seen.items():
        print("%s %s (%d time%s; first in %s)" % ("OURS" if ours else "FOREIGN", desc, count,
                                                  "" if count == 1 else "s", first))
        bad += ours
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
