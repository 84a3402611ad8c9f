#!/usr/bin/env python3
"""Instructions per logit in the row kernels' sweeps, from RADV's disassembly.

Reads the manifest of examples/spirv.rs and the driver output of radv_compile (run
with RADV_DEBUG=shaders,shaderstats,nocache), and prints one row per pipeline: VGPRs,
waves per SIMD, each sweep's hot loop per logit, every loop of each sweep, and the
instructions per logit of an ordinary row at three vocabulary sizes.

A loop runs from its label to the branch back to it. Its instructions are counted
without s_waitcnt*, s_nop and s_delay_alu (scheduling, not issue), every arm of a
branch inside it included, and divided by the logits one lane takes per iteration.

The loops of each sweep, in program order (the roles are checked against which loops
compute an exp, so a reordering by the compiler stops the script):

  statistics (stats/groups.wgsl): the loops that load and exp and store nothing
    hot    every row: the lane's whole groups of eight (STATS_STEP logits a step)
    exact  the lanes whose hot loop met a ±inf or overflowing logit take their
           groups again one logit at a time (after the hot loop, not instead)
  gradient (sweep/groups.wgsl): the loops that store
    zero   rows outside the loss (weight 0): zeros, nothing read (GRAD_STEP a step)
    ztail  their last, partial group: lane 0, one element a step
    hot    every other row whose gradient coefficients are finite (GRAD_STEP a step)
    exact  rows whose coefficients are not (+inf or NaN logits, all −inf, a NaN
           loss input, absurd magnitudes): instead of the hot loop
    tail   the row's last V mod 8 elements: lane 0, one element a step (their
           gradient is computed before the loop; ordinary rows where V mod 8 ≠ 0)
  gradient (sweep/words.wgsl, 16-bit gradient rows that may share a word):
    zero, hot, exact as above, four words (eight logits) a step, then
    edge   lane 0, one word (two logits) a step: the words outside the groups of
           four: the row's first word when it starts on an odd element, up to three
           whole words past the last group, its last word when it ends on one

An ordinary row (masked in, finite logits and inputs) takes only the hot loops and
the tails; its figure at a vocabulary V is every loop's instructions times the
iterations it makes in the row, summed over the row's lanes, divided by V: each
loop weighted by the share of the row's logits it takes. It does not depend on the
lanes: in either layout (strided, lane blocks) each whole group is one iteration of
the hot loop on some lane, and V/8 not a multiple of the lanes gives some lanes one
iteration fewer, not another loop. Straight-line code adds nothing: the statistics
sweep's last partial group (lane 0), and the gradient's tails where the compiler
unrolled their loops (unchecked modules). The word sweep's rows are taken
contiguous (row r starts at element r·V: for odd V every other row starts on an odd
element, and the figure is the mean of the two).

usage: count.py MANIFEST DRIVER_OUTPUT [--json FILE]
"""

import json
import re
import sys

SKIP = ("s_waitcnt", "s_nop", "s_delay_alu")
LOADS = ("buffer_load", "global_load")
STORES = ("buffer_store", "global_store", "buffer_atomic", "global_atomic")
# the vocabulary sizes of the table's ordinary-row columns (Qwen2/2.5, Llama 2, GPT-2)
SHAPES = (151936, 32000, 50257)
# each sweep's loops in program order, by which of them compute an exp (e) and which
# do not (n); where a loop's trip count is known to be small (the tails of unchecked
# modules) the compiler unrolls it, and it is not there
STATS_ROLES = (r"(e)(e)", ("hot", "exact"))
GRAD_ROLES = (r"(n)(n?)(e)(e)(e?)(n?)", ("zero", "ztail", "hot", "exact", "edge", "tail"))
# kept_partials.wgsl: its loop over a row's kept ids loads, exps and stores (the pairs),
# one id a step, after the statistics sweep of the rows that keep every token
KEPT_ROLES = (r"(e)", ("kept",))
# the loss launch over a given set (sampler/kept.wgsl): the gradient sweep as above
# for rows that keep every token, then a kept row's zeros (kzero, GRAD_STEP a step, and
# ktail, its last group or edge words) and the scatter of its kept ids, one id a step
KEPT_GRAD_ROLES = (r"(n)(n?)(e)(e)(e?)(n??)(n)(n?)(e)",
                   ("zero", "ztail", "hot", "exact", "edge", "tail", "kzero", "ktail",
                    "scatter"))
# logits a lane takes per iteration where it is not the sweep's STATS_STEP / GRAD_STEP
ROLE_STEP = {"ztail": 1, "tail": 1, "edge": 2, "kept": 1, "ktail": 1, "scatter": 1}
GROUP = 8


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
        m = re.match(r"^workgroup-size: (\d+), (\d+), (\d+)", line)
        if m and "lanes" not in out:
            out["lanes"] = int(m.group(1)) * int(m.group(2)) * int(m.group(3))
    return out


def loops(labels, instrs):
    """Every loop as (first, last) instruction indices."""
    found = []
    for i, ins in enumerate(instrs):
        m = re.match(r"^s_(c?branch)\S*\s+(BB\d+)", ins)
        if m and m.group(2) in labels and labels[m.group(2)] <= i:
            found.append((labels[m.group(2)], i))
    return found


def sweep_of(instrs, first, last):
    """'stats', 'grad' or None: the sweep a loop over instrs[first..last] belongs to."""
    ops = [x.split()[0] for x in instrs[first:last + 1]]
    if any(o.startswith(STORES) for o in ops):
        return "grad"
    if any(o.startswith("v_exp") for o in ops) and any(o.startswith(LOADS) for o in ops):
        return "stats"
    return None


def sweep_loops(labels, instrs, name):
    """Each sweep's loops as [(role, instructions)], and the gradient sweep's kind: of
    the loops of a sweep, those that hold no smaller loop of it (a sweep, not a loop
    around it), in program order, named by STATS_ROLES / GRAD_ROLES."""
    found = [(a, b, sweep_of(instrs, a, b)) for a, b in loops(labels, instrs)]
    inner = {"stats": [], "grad": []}
    for a, b, s in sorted(found):
        if s is None or any((c, d) != (a, b) and a <= c and d <= b and t == s for c, d, t in found):
            continue
        exp = "e" if any(x.startswith("v_exp") for x in instrs[a:b + 1]) else "n"
        inner[s].append((sum(1 for x in instrs[a:b + 1] if not x.startswith(SKIP)), exp))

    def named(got, pattern, roles):
        exps = "".join(e for _, e in got)
        m = re.fullmatch(pattern, exps)
        present = [r for r, g in zip(roles, m.groups()) if g] if m else []
        if not m or {"edge", "tail"} <= set(present):
            sys.exit(f"count.py: {name}: loops that compute an exp (e) or not (n) as {exps}, "
                     f"not as the sweeps' {pattern}")
        return [(r, n) for r, (n, _) in zip(present, got)]

    grad_roles = GRAD_ROLES
    if name.startswith("KeptPartials/"):
        grad_roles = KEPT_ROLES
    elif name.endswith("/kept") or name.endswith("/kept+softcap"):
        grad_roles = KEPT_GRAD_ROLES
    out = {s: named(inner[s], *roles) if inner[s] else []
           for s, roles in (("stats", STATS_ROLES), ("grad", grad_roles))}
    out["sweep"] = None
    if out["grad"] and not name.startswith("KeptPartials/"):
        out["sweep"] = "words" if "edge" in dict(out["grad"]) else "groups"
    return out


def ordinary_iterations(sweep, vocab, row):
    """Iterations of each loop, over all the lanes of row `row`, for an ordinary row
    of `vocab` logits (rows contiguous: it starts at element row·vocab)."""
    its = {"stats.hot": vocab // GROUP}
    if sweep == "groups":
        its.update({"grad.hot": vocab // GROUP, "grad.tail": vocab % GROUP})
    elif sweep == "words":
        # sweep/words.wgsl's w0, w1 and groups; lane 0 takes the row's other words (the
        # iteration that jumps over the groups computes none and is not counted)
        gbase = row * vocab
        first, last = gbase >> 1, (gbase + vocab - 1) >> 1
        w0, w1 = (gbase + 1) >> 1, (gbase + vocab) >> 1
        groups = (w1 - w0) // 4
        its.update({"grad.hot": groups, "grad.edge": last - first + 1 - 4 * groups})
    return its


def ordinary_per_logit(sw, has_grad, vocab):
    """Each sweep's instructions per logit in an ordinary row of `vocab` logits, by the
    iterations each loop makes in it (the mean over an even and an odd row)."""
    out = {}
    for s in ("stats", "grad"):
        body = {f"{s}.{r}": n for r, n in sw[s]}
        total = 0
        for row in (0, 1):
            its = ordinary_iterations(sw["sweep"] if has_grad else None, vocab, row)
            total += sum(n * body[k] for k, n in its.items() if k in body)
        out[s] = round(total / 2 / vocab, 1)
    return out


def per_logit(loops_, step):
    return [(r, round(n / ROLE_STEP.get(r, step), 1)) for r, n in loops_]


def measure(name, lines, s_step, g_step):
    labels, instrs = disassembly(lines)
    st = stats(lines)
    sw = sweep_loops(labels, instrs, name)
    if (s_step and not sw["stats"]) or (g_step and not sw["grad"]):
        sys.exit(f"count.py: {name}: a sweep's loop was not found")
    stats_loops, grad_loops = per_logit(sw["stats"], s_step), per_logit(sw["grad"], g_step)
    row = {
        "variant": name,
        "vgprs": st.get("VGPRs", 0),
        "waves": st.get("Subgroups per SIMD", 0),
        "lanes": st.get("lanes", 0),
        "stats_loop": dict(sw["stats"]).get("hot", 0),
        "stats_step": s_step,
        "grad_loop": dict(sw["grad"]).get("hot", 0),
        "grad_step": g_step,
        "stats_per_logit": dict(stats_loops).get("hot", 0.0),
        "grad_per_logit": dict(grad_loops).get("hot", 0.0),
        "grad_sweep": sw["sweep"],
        "stats_loops": dict(stats_loops),
        "grad_loops": dict(grad_loops),
    }
    ordinary = {v: ordinary_per_logit(sw, g_step > 0, v) for v in SHAPES}
    row["ordinary_per_logit"] = {v: round(o["stats"] + o["grad"], 1) for v, o in ordinary.items()}
    row["total_per_logit"] = round(row["stats_per_logit"] + row["grad_per_logit"], 1)
    return row


def select_passes(name, lines):
    """kept_select.wgsl: its passes over the row, in program order: each loop that
    loads logits (a group of GROUP a step) and holds no smaller such loop, with its
    instructions per logit, tagged by what it does: the row's maximum, the gathering
    into workgroup memory (an atomic), the trials by count, the trials by mass (an
    exp), the census. Which passes a row takes depends on its rules (the shader's
    header comment); the table lists what each costs when taken."""
    labels, instrs = disassembly(lines)
    st = stats(lines)
    found = [(a, b) for a, b in loops(labels, instrs)
             if any(x.split()[0].startswith(LOADS) for x in instrs[a:b + 1])]
    passes = []
    for a, b in sorted(found):
        if any((c, d) != (a, b) and a <= c and d <= b for c, d in found):
            continue
        body = [x for x in instrs[a:b + 1] if not x.startswith(SKIP)]
        exp = any(x.startswith("v_exp") for x in body)
        atomic = any(x.startswith(("ds_add", "ds_min", "ds_max")) for x in body)
        passes.append((("mass" if exp else "gather" if atomic else "pass"),
                       round(len(body) / GROUP, 1)))
    if not passes:
        sys.exit(f"count.py: {name}: no pass over the row was found")
    return {"variant": name, "vgprs": st.get("VGPRs", 0),
            "waves": st.get("Subgroups per SIMD", 0), "passes": passes}


def cell(loops_):
    return ", ".join(f"{r} {v:.1f}" for r, v in loops_.items()) or "–"


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
    table, selects = [], []
    for idx, name, _entry, _file, s_step, g_step in rows:
        if idx not in by_name:
            sys.exit(f"count.py: no driver output for {name}")
        if name.startswith("KeptSelect/"):
            selects.append(select_passes(name, by_name[idx]))
            continue
        table.append(measure(name, by_name[idx], int(s_step), int(g_step)))
    shapes = " | ".join(f"ordinary row, V = {v}" for v in SHAPES)
    print(f"| variant | VGPRs | waves/SIMD | statistics sweep | gradient sweep | total "
          f"| statistics loops | gradient loops | {shapes} |")
    print("|---" * (8 + len(SHAPES)) + "|")
    for r in table:
        g = f"{r['grad_per_logit']:.1f}" if r["grad_step"] else "–"
        o = " | ".join(f"{r['ordinary_per_logit'][v]:.1f}" for v in SHAPES)
        print(f"| {r['variant']} | {r['vgprs']} | {r['waves']} | {r['stats_per_logit']:.1f} | {g} "
              f"| **{r['total_per_logit']:.1f}** | {cell(r['stats_loops'])} "
              f"| {cell(r['grad_loops'])} | {o} |")
    if selects:
        print()
        print("| kept_select variant | VGPRs | waves/SIMD | passes over the row, instructions "
              "per logit, in program order |")
        print("|---|---|---|---|")
        for r in selects:
            p = ", ".join(f"{k} {v:.1f}" for k, v in r["passes"])
            print(f"| {r['variant']} | {r['vgprs']} | {r['waves']} | {p} |")
    if json_out:
        json.dump(table + selects, open(json_out, "w"), indent=1)


if __name__ == "__main__":
    main()
