"""Rows, verdicts, the text tables and the JSON document of an audit."""
from __future__ import annotations

import json

from kernels.audit.capture import config_label
from kernels.audit.compile import SHARED_LIMITS, arch_name

DTYPE_ORDER = ("fp16", "bf16", "fp32")
COMPILE_FIELDS = ("compiled", "error", "shared_bytes", "registers", "spill_bytes", "spill_stores", "spill_loads",
                  "mma", "mma_kinds", "mma_instructions", "mma_work", "wgmma_serialized", "ptxas_warnings")


def kernel_name(fn_name: str) -> str:
    """``_flash_attn_fwd_kernel`` -> ``flash_attn_fwd``."""
    return fn_name.strip("_").removesuffix("_kernel")


def _unique(values):
    return list(dict.fromkeys(values))


def make_row(job: dict, users: list, result: dict) -> dict:
    """One audit row: the compile ``job``, the (launch, config) pairs that compile to it, and what
    compiling it measured."""
    launch, config = users[0]
    constexprs = {job_name: value for job_name, value in
                  ((launch.fn.arg_names[path[0]], value) for path, value in job["constexprs"].items())
                  if config is None or job_name not in config.kwargs}
    row = dict(
        kernel=kernel_name(job["name"]), arch=arch_name(job["arch"]), dtype=launch.label.get("dtype", "?"),
        variant=", ".join(_unique(u.label.get("variant", "") for u, _ in users)),
        config=config_label(launch, config), autotuned=config is not None,
        config_index=launch.configs.index(config) if config is not None else 0,
        constexprs={k: v for k, v in constexprs.items() if not k.startswith("stride_")},
        shapes=_unique(u.label.get("shape", "") for u, _ in users),
        divisible_by_16=[launch.fn.arg_names[path[0]] for path, attrs in job["attrs"].items()
                         if ["tt.divisibility", 16] in [list(a) for a in attrs]],
        shared_limit=SHARED_LIMITS[job["arch"]],
    )
    row.update({k: result[k] for k in COMPILE_FIELDS})
    _head_dim(row, launch)
    return _judge(row)


def _head_dim(row: dict, launch) -> None:
    """For the attention kernels with dots over the head dim (IEEE and BLOCK_D constexprs): the
    columns those dots span (``head_dim_padded``, BLOCK_D + BLOCK_D2) and the share of their work
    spent on padding (``head_dim_padding``), also noted in the variant when there is any."""
    c = row["constexprs"]
    if launch.label.get("op") != "attention" or "IEEE" not in c or "BLOCK_D" not in c:
        return
    D = next(a for a, name in zip(launch.args, launch.fn.arg_names) if name == "D")
    padded = c["BLOCK_D"] + c.get("BLOCK_D2", 0)
    row.update(head_dim=D, head_dim_padded=padded, head_dim_padding=round(1 - D / padded, 4))
    if c.get("BLOCK_D2"):
        row["variant"] += f" as {c['BLOCK_D']}+{c['BLOCK_D2']}"
    if padded > D:
        row["variant"] += f" padded to {padded}"


def name_specializations(rows: list) -> None:
    """Where one (kernel, arch, dtype, variant, config) compiled to several kernels because integer
    arguments differ in their divisibility by 16 (e.g. H = 16 against H = 12), add to each variant
    the arguments that set it apart, as ``name%16``."""
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["arch"], r["dtype"], r["variant"], r["config"]), []).append(r)
    for rs in groups.values():
        if len(rs) < 2:
            continue
        common = set.intersection(*(set(r["divisible_by_16"]) for r in rs))
        for r in rs:
            extra = [n for n in r["divisible_by_16"] if n not in common]
            r["variant"] += f" ({' '.join(n + '%16' for n in extra)})" if extra else ""


def merge_refusals(refused: list) -> list:
    """One refusal per (op, dtype, variant, error), with the shapes it happened for."""
    merged: dict[tuple, dict] = {}
    for r in refused:
        key = (r["op"], r["dtype"], r["variant"], r["error"])
        merged.setdefault(key, dict(r, shapes=[]))["shapes"].append(r["shape"])
    return list(merged.values())


def refused_row(refusal: dict, arch: int) -> dict:
    """A row for a driver whose launcher raised before launching anything."""
    row = dict(kernel=f"{refusal['op']} (launcher)", arch=arch_name(arch), dtype=refusal["dtype"],
               variant=refusal["variant"], config="-", autotuned=False, config_index=0, constexprs={},
               shapes=refusal["shapes"], divisible_by_16=[], shared_limit=SHARED_LIMITS[arch])
    row.update({k: None for k in COMPILE_FIELDS})
    row.update(compiled=False, error=refusal["error"], mma="none", mma_kinds=[], mma_instructions=0, mma_work=0,
               wgmma_serialized=False, ptxas_warnings=[])
    return _judge(row)


def _judge(row: dict) -> dict:
    row["over_shared"] = bool(row["compiled"] and row["shared_bytes"] > row["shared_limit"])
    row["spills"] = bool(row["compiled"] and (row["spill_bytes"] or 0) > 0)
    row["clean"] = bool(row["compiled"] and not row["error"] and not row["over_shared"] and not row["spills"]
                        and not row["wgmma_serialized"])
    return row


def sort_rows(rows: list, kernel_order: list) -> list:
    def key(r):
        base = r["kernel"].removesuffix(" (launcher)")
        return (kernel_order.index(base) if base in kernel_order else len(kernel_order), r["kernel"],
                -int(r["arch"][3:]), DTYPE_ORDER.index(r["dtype"]) if r["dtype"] in DTYPE_ORDER else 9,
                r["variant"], r["config_index"])
    return sorted(rows, key=key)


def failing(rows: list, space: str) -> list:
    """The rows that make the audit fail: any unclean row in the default (or off) space; in the full
    space only compile failures and launcher refusals (its extra configs exist for tuning work, and
    the autotuner skips one that overflows shared memory at its first launch)."""
    if space == "full":
        return [r for r in rows if not r["compiled"]]
    return [r for r in rows if not r["clean"]]


def summarize(rows: list) -> list:
    """Per kernel x arch x dtype: configs, failures, spills, shared memory, MMA kinds."""
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["arch"], r["dtype"]), []).append(r)
    out = []
    for (kernel, arch, dtype), rs in groups.items():
        compiled = [r for r in rs if r["compiled"]]
        spilling = [r for r in compiled if r["spills"]]
        out.append(dict(
            kernel=kernel, arch=arch, dtype=dtype, configs=len(rs), failed=len(rs) - len(compiled),
            spilling=len(spilling), max_spill_bytes=max((r["spill_bytes"] for r in spilling), default=0),
            over_shared=sum(r["over_shared"] for r in rs),
            max_shared_bytes=max((r["shared_bytes"] for r in compiled), default=0), shared_limit=rs[0]["shared_limit"],
            serialized=sum(r["wgmma_serialized"] for r in rs), mma=sorted({r["mma"] for r in compiled}),
            clean=sum(r["clean"] for r in rs)))
    return out


def _table(header: list, lines: list) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def _kb(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def render(rows: list, summary: list, meta: dict) -> str:
    """The text report: a header, the summary table, then one table per kernel."""
    parts = [f"fastvit kernel audit: space {meta['space']}, {', '.join(meta['archs'])}; triton {meta['triton']}, "
             f"ptxas {meta['ptxas']}",
             "shared in KiB (limit per block: sm_90 227.0, sm_80 163.0); spill = ptxas spill stores + loads in "
             "bytes; work = static MMA work (sum of m*n*k over the PTX's MMA instructions)", ""]
    parts.append(_table(
        ["kernel", "arch", "dtype", "configs", "failed", "spilling", "max spill B", "over shared", "max shared",
         "mma", "serialized", "clean"],
        [[s["kernel"], s["arch"], s["dtype"], s["configs"], s["failed"], s["spilling"], s["max_spill_bytes"],
          s["over_shared"], f"{_kb(s['max_shared_bytes'])}/{_kb(s['shared_limit'])}", "+".join(s["mma"]) or "-",
          s["serialized"], f"{s['clean']}/{s['configs']}"] for s in summary]))
    for kernel in _unique(r["kernel"] for r in rows):
        rs = [r for r in rows if r["kernel"] == kernel]
        parts += ["", f"== {kernel} =="]
        parts.append(_table(
            ["arch", "dtype", "variant", "config", "shared", "regs", "spill", "mma", "work", "status"],
            [[r["arch"], r["dtype"], r["variant"], r["config"], _kb(r["shared_bytes"]),
              "-" if r["registers"] is None else r["registers"], "-" if r["spill_bytes"] is None else r["spill_bytes"],
              r["mma"], r["mma_work"] or "-", _status(r)] for r in rs]))
    bad = [r for r in rows if r["error"]]
    if bad:
        parts += ["", "== errors =="] + [f"{r['kernel']} {r['arch']} {r['dtype']} {r['variant']} {r['config']}: "
                                         f"{r['error']}" for r in bad]
    return "\n".join(parts) + "\n"


def _status(r: dict) -> str:
    if not r["compiled"]:
        return "FAILED"
    flags = [name for name, on in (("OVER-SHARED", r["over_shared"]), ("SPILLS", r["spills"]),
                                   ("SERIALIZED", r["wgmma_serialized"]), ("ERROR", bool(r["error"]))) if on]
    return " ".join(flags) or "ok"


def document(rows: list, summary: list, meta: dict) -> str:
    """``{"meta", "summary", "rows"}`` as JSON, one summary entry or row per line (diffs stay readable)."""
    def lines(items):
        return "[\n" + ",\n".join(json.dumps(item, default=str) for item in items) + "\n]"
    return (f'{{"meta": {json.dumps(meta)},\n"summary": {lines(summary)},\n"rows": {lines(rows)}}}\n')
