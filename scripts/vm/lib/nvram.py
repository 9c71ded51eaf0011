#!/usr/bin/env python3
"""The VM test's view of OVMF's NVRAM, on the host (scripts/vm/lib/guestdisk.sh).

The variable store of the guest's OVMF_VARS copy is read and written by
virt-fw-vars (virt-firmware, PyPI), which converts it to and from JSON
({"version": 2, "variables": [{"name", "guid", "attr", "data": hex}]}).
This script only turns that JSON into lines the checks read, and builds
the Boot#### entries of a factory disk; it parses EFI_LOAD_OPTION bytes
the way the firmware does (UEFI 2.10, 3.1.3), independently of abupdate's
own parser, so the checks do not trust the code they check.

  nvram.py show VARS.json
      BootOrder=0010,0011,0000       (absent: BootOrder=)
      BootNext=0011                  (only when set)
      Boot0010=abupdate A|\\EFI\\abupdate-a\\vmlinuz.efi|HD(1,GPT,<uuid>,0x800,0x20000)|<options>|active
  nvram.py entries DISK --entry NUM DESC LOADER PARTNUM [OPTIONS] ... [--order NUM,...]
      the JSON for `virt-fw-vars --set-json`: the entries (HD() of
      partition PARTNUM read from DISK's GPT), BootOrder when given
"""
import json
import struct
import sys

GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
NV_BS_RT = 7


def die(msg):
    print(f"nvram.py: {msg}", file=sys.stderr)
    sys.exit(1)


def guid_text(b):
    """A GUID stored in EFI byte order (first three fields little-endian)."""
    a, b2, c = struct.unpack("<IHH", b[:8])
    return f"{a:08x}-{b2:04x}-{c:04x}-{b[8:10].hex()}-{b[10:16].hex()}"


def device_path_text(dp):
    """HD() and File() nodes as the firmware's BDS prints them; others by type."""
    out, at = [], 0
    while at + 4 <= len(dp):
        t, s, ln = dp[at], dp[at + 1], struct.unpack("<H", dp[at + 2:at + 4])[0]
        if ln < 4 or at + ln > len(dp):
            return None
        body = dp[at + 4:at + ln]
        if t == 0x7F and s == 0xFF:
            return "/".join(out) if at + ln == len(dp) else None
        if t == 4 and s == 1 and len(body) >= 38:
            num, start, size = struct.unpack("<IQQ", body[:20])
            out.append(f"HD({num},GPT,{guid_text(body[20:36])},{start:#x},{size:#x})")
        elif t == 4 and s == 4:
            out.append(body.decode("utf-16-le", "replace").rstrip("\0"))
        else:
            out.append(f"Node({t},{s})")
        at += ln
    return None


def load_option(data):
    """(description, device path text, optional data as text, active) or None."""
    if len(data) < 6:
        return None
    attrs, fpl = struct.unpack("<IH", data[:6])
    at = 6
    while True:
        if at + 2 > len(data):
            return None
        if data[at:at + 2] == b"\0\0":
            break
        at += 2
    desc = data[6:at].decode("utf-16-le", "replace")
    at += 2
    dp = data[at:at + fpl]
    if len(dp) != fpl:
        return None
    path = device_path_text(dp)
    if path is None:
        return None
    opt = data[at + fpl:]
    text = opt.decode("utf-16-le", "replace") if len(opt) % 2 == 0 else opt.hex()
    return desc, path, text.rstrip("\0"), bool(attrs & 1)


def u16_list(hexdata):
    raw = bytes.fromhex(hexdata)
    if len(raw) % 2:
        return None
    return [f"{n:04X}" for n in struct.unpack(f"<{len(raw) // 2}H", raw)]


def show(path):
    with open(path) as f:
        doc = json.load(f)
    vars_ = {v["name"]: v for v in doc.get("variables", []) if v.get("guid") == GLOBAL}
    order = u16_list(vars_["BootOrder"]["data"]) if "BootOrder" in vars_ else []
    print("BootOrder=" + ",".join(order if order is not None else ["<odd length>"]))
    if "BootNext" in vars_:
        nxt = u16_list(vars_["BootNext"]["data"])
        print("BootNext=" + (nxt[0] if nxt and len(nxt) == 1 else "<damaged>"))
    for name in sorted(n for n in vars_ if len(n) == 8 and n.startswith("Boot")):
        try:
            int(name[4:], 16)
        except ValueError:
            continue
        opt = load_option(bytes.fromhex(vars_[name]["data"]))
        if opt is None:
            print(f"{name}=<unparsable>")
            continue
        desc, dp, options, active = opt
        print(f"{name}={desc}|{dp}|{options}|{'active' if active else 'inactive'}")


def gpt_partition(disk, number):
    """(first LBA, size in LBAs, unique GUID bytes) of GPT partition `number`."""
    with open(disk, "rb") as f:
        f.seek(512)
        hdr = f.read(92)
        if hdr[:8] != b"EFI PART":
            die(f"{disk}: no GPT header")
        entries_lba, count, size = struct.unpack("<QII", hdr[72:88])
        if not 1 <= number <= count:
            die(f"{disk}: no GPT partition {number}")
        f.seek(entries_lba * 512 + (number - 1) * size)
        e = f.read(128)
    first, last = struct.unpack("<QQ", e[32:48])
    return first, last - first + 1, e[16:32]


def entry_bytes(disk, desc, loader, partnum, options):
    first, size, guid = gpt_partition(disk, partnum)
    hd = bytes([4, 1, 42, 0]) + struct.pack("<IQQ", partnum, first, size) + guid + bytes([2, 2])
    path = loader.encode("utf-16-le") + b"\0\0"
    fp = bytes([4, 4]) + struct.pack("<H", 4 + len(path)) + path
    dp = hd + fp + bytes([0x7F, 0xFF, 4, 0])
    opt = options.encode("utf-16-le") if options else b""
    return struct.pack("<IH", 1, len(dp)) + desc.encode("utf-16-le") + b"\0\0" + dp + opt


def entries(args):
    disk, rest, variables = args[0], args[1:], []
    while rest:
        if rest[0] == "--entry" and len(rest) >= 5:
            num, desc, loader, partnum = rest[1], rest[2], rest[3], int(rest[4])
            rest = rest[5:]
            options = ""
            if rest and not rest[0].startswith("--"):
                options, rest = rest[0], rest[1:]
            data = entry_bytes(disk, desc, loader, partnum, options)
            variables.append({"name": f"Boot{int(num, 16):04X}", "guid": GLOBAL, "attr": NV_BS_RT,
                              "data": data.hex()})
        elif rest[0] == "--order" and len(rest) >= 2:
            nums = [int(n, 16) for n in rest[1].split(",") if n]
            variables.append({"name": "BootOrder", "guid": GLOBAL, "attr": NV_BS_RT,
                              "data": struct.pack(f"<{len(nums)}H", *nums).hex()})
            rest = rest[2:]
        else:
            die(f"bad arguments at {rest[0]!r}")
    json.dump({"version": 2, "variables": variables}, sys.stdout, indent=1)
    print()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "show":
        show(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "entries":
        entries(sys.argv[2:])
    else:
        die("usage: nvram.py show VARS.json | entries DISK --entry NUM DESC LOADER PARTNUM [OPTIONS]... [--order N,...]")


if __name__ == "__main__":
    main()
