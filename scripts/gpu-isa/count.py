#!/usr/bin/env python3
"""Instructions per logit in the row kernels' hot loops, from RADV's disassembly.

Reads the manifest of examples/spirv.rs and the driver output of radv_compile (run
with RADV_DEBUG=shaders,shaderstats,nocache), and prints one row per pipeline: VGPRs,
waves per SIMD, and each sweep's instructions per logit.

A loop runs from its label to the branch back to it. Its instructions are counted
without s_waitcnt*, s_nop and s_delay_alu (scheduling, not issue), and divided by the
logits one lane takes per iteration (the WGSL's STATS_STEP / GRAD_STEP). The
statistics sweep is the first loop (in program order) that loads from memory and has
an exp but no store; the gradient sweep the first with a store (each the sweep
itself, not a loop around it). The kernels put their hot loop first; a later loop of
the same kind is the exact path that only rows with non-finite logits run.

usage: count.py MANIFEST DRIVER_OUTPUT [--json FILE]
"""

import json
import re
import sys

SKIP = ("s_waitcnt", "s_nop", "s_delay_alu")
LOADS = ("buffer_load", "global_load")
STORES = ("buffer_store", "global_store", "buffer_atomic", "global_atomic")


def sections(text):
    """The driver output of each pipeline, by name."""
    out, name, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("### PIPELINE "):
            name, lines = line[len("### PIPELINE "):].strip(), []
        elif line.startswith("### END ") and name is not None:
            out[name] = lines
            name = None
        elif name is not None:
            lines.append(line)
    return out


def disassembly(lines):
    """(labels, instructions) of the final ISA: label -> index of its first instruction."""
    start = None
    for i, line in enumerate(lines):
        if line.strip() == "disasm:":
            start = i + 1
    if start is None:
        return {}, []
    labels, instrs = {}, []
    for line in lines[start:]:
        m = re.match(r"^(BB\d+):$", line)
        if m:
            labels[m.group(1)] = len(instrs)
        elif line.startswith("\t"):
            instrs.append(line.strip().split(";")[0].strip())
        elif line.strip():
            break
    return labels, instrs


def stats(lines):
    out = {}
    for line in lines:
        m = re.match(r"^(VGPRs|SGPRs|Subgroups per SIMD|Instructions|Spilled VGPRs): (\d+)", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = int(m.group(2))
    return out


def loops(labels, instrs):
    """Every loop as (first, last) instruction indices."""
    found = []
    for i, ins in enumerate(instrs):
        m = re.match(r"^s_(c?branch)\S*\s+(BB\d+)", ins)
        if m and m.group(2) in labels and labels[m.group(2)] <= i:
            found.append((labels[m.group(2)], i))
    return found


def kind(instrs, first, last):
    """'stats', 'grad' or None for the loop over instrs[first..last]."""
    ops = [x.split()[0] for x in instrs[first:last + 1]]
    if not any(o.startswith("v_exp") for o in ops) or not any(o.startswith(LOADS) for o in ops):
        return None
    return "grad" if any(o.startswith(STORES) for o in ops) else "stats"


def sweeps(labels, instrs):
    """Instruction counts of the statistics and gradient sweeps' hot loops: of the loops
    of each kind that hold no smaller loop of that kind (a sweep, not a loop around
    it), the first in program order. The kernels put their hot loop first; a loop
    after it of the same kind is the exact path of rare rows (non-finite logits), run
    only by them. Everything from the label to the back-edge counts."""
    found = [(a, b, kind(instrs, a, b)) for a, b in loops(labels, instrs)]
    best = {"stats": None, "grad": None}
    for a, b, k in sorted(found):
        if k is None or best[k] is not None:
            continue
        if any((c, d) != (a, b) and a <= c and d <= b and kk == k for c, d, kk in found):
            continue
        best[k] = sum(1 for x in instrs[a:b + 1] if not x.startswith(SKIP))
    return {k: v or 0 for k, v in best.items()}


def main():
    args = sys.argv[1:]
    json_out = None
    if "--json" in args:
        i = args.index("--json")
        json_out = args[i + 1]
        del args[i:i + 2]
    manifest, driver = args
    rows = [line.rstrip("\n").split("\t") for line in open(manifest) if line.strip()]
    by_name = sections(open(driver, errors="replace").read())
    table = []
    for idx, name, entry, _file, s_step, g_step in rows:
        lines = by_name.get(idx)
        if lines is None:
            print(f"count.py: no driver output for {name}", file=sys.stderr)
            sys.exit(1)
        labels, instrs = disassembly(lines)
        st = stats(lines)
        sw = sweeps(labels, instrs)
        s_step, g_step = int(s_step), int(g_step)
        per = lambda n, step: n / step if step else 0.0
        row = {
            "variant": name,
            "vgprs": st.get("VGPRs", 0),
            "waves": st.get("Subgroups per SIMD", 0),
            "stats_loop": sw["stats"],
            "stats_step": s_step,
            "grad_loop": sw["grad"],
            "grad_step": g_step,
            "stats_per_logit": round(per(sw["stats"], s_step), 1),
            "grad_per_logit": round(per(sw["grad"], g_step), 1),
        }
        row["total_per_logit"] = round(row["stats_per_logit"] + row["grad_per_logit"], 1)
        if (s_step and not sw["stats"]) or (g_step and not sw["grad"]):
            print(f"count.py: {name}: a sweep's loop was not found", file=sys.stderr)
            sys.exit(1)
        table.append(row)
    print("| variant | VGPRs | waves/SIMD | statistics sweep | gradient sweep | total |")
    print("|---|---|---|---|---|---|")
    for r in table:
        g = f"{r['grad_per_logit']:.1f}" if r["grad_step"] else "–"
        print(f"| {r['variant']} | {r['vgprs']} | {r['waves']} | {r['stats_per_logit']:.1f} | {g} "
              f"| **{r['total_per_logit']:.1f}** |")
    if json_out:
        json.dump(table, open(json_out, "w"), indent=1)


if __name__ == "__main__":
    main()
