"""The performance targets of fastvit's Triton kernels: one table, from which both the verdicts
(:func:`kernel_targets`) and the sentences that state the targets (:func:`targets_prose`) are made."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fastvit.report.facts import (ATTENTION_PEERS, ATTENTION_PEERS_NAME, GROUP, KERNEL_BACKEND, NORM_REFERENCE,
                                  OP_SHORT, PASS_SHORT, PATCH_REFERENCE)
from fastvit.report.tables import groups, op_rank, sort_by_op, status_kind

PEERS = "peers"  # measured against the best of ATTENTION_PEERS: their best median / the kernel's
COPY = "copy"    # the kernel's bytes/s as a fraction of the measured copy bandwidth
# any other ``against`` is a reference backend: its median / the kernel's


@dataclass(frozen=True)
class Target:
    """One goal: in ``op`` (and ``pass_``, None for every pass) at tokens ``min_tokens <= N < below_tokens``
    and batch >= ``min_batch`` (None: no bound), the ratio measured ``against`` must reach ``goal``."""
    op: str
    pass_: str | None
    goal: float
    against: str
    description: str
    min_tokens: int | None = None
    below_tokens: int | None = None
    min_batch: int | None = None

    def applies(self, pass_: str, tokens: int, batch: int) -> bool:
        return ((self.pass_ is None or self.pass_ == pass_)
                and (self.min_tokens is None or tokens >= self.min_tokens)
                and (self.below_tokens is None or tokens < self.below_tokens)
                and (self.min_batch is None or batch >= self.min_batch))


_VS_PEERS = f"speed vs best of {ATTENTION_PEERS_NAME}"
LONG_SEQUENCE = 1025  # attention's targets differ below and from this many tokens on
BIG_BATCH = 64        # below LONG_SEQUENCE, attention has targets for batches of at least this
TARGETS = (
    Target("attention", "fwd", 0.9, PEERS, _VS_PEERS, min_tokens=LONG_SEQUENCE),
    Target("attention", "fwd", 1.0, PEERS, _VS_PEERS, below_tokens=LONG_SEQUENCE, min_batch=BIG_BATCH),
    Target("attention", "train", 0.8, PEERS, _VS_PEERS, min_tokens=LONG_SEQUENCE),
    Target("attention", "train", 0.8, PEERS, _VS_PEERS, below_tokens=LONG_SEQUENCE, min_batch=BIG_BATCH),
    Target("layernorm", None, 1.5, NORM_REFERENCE, f"speedup over {NORM_REFERENCE}"),
    Target("layernorm", None, 0.85, COPY, "fraction of measured copy bandwidth"),
    Target("patch_embed", None, 1.3, PATCH_REFERENCE, f"speedup over {PATCH_REFERENCE}"),
)
"""Every target, in the order the verdicts of one configuration are listed. A configuration no row of its
op and ``against`` applies to gets a verdict without a goal."""


def _goal(targets, op: str, against: str, pass_: str, tokens: int, batch: int) -> tuple[float | None, str]:
    """The goal of the first target that applies, or None; and the description of the measure."""
    rows = [t for t in targets if t.op == op and t.against == against]
    hit = next((t for t in rows if t.applies(pass_, tokens, batch)), None)
    return (hit.goal if hit else None), (hit or rows[0]).description


def kernel_targets(df: pd.DataFrame, env: dict, targets: Sequence[Target] | None = None) -> pd.DataFrame:
    """The measured ratio behind each performance target of fastvit's Triton kernels, per configuration
    (``targets``: :data:`TARGETS` unless given).

    A triton row that was not timed (oom, skipped, error) gives a row with no measurement and its
    status, which counts as not met where a goal is set; a target without any timed peer gives no row.
    """
    targets = TARGETS if targets is None else targets
    cols = GROUP + ["resolution", "tokens", "target", "measured", "goal", "met", "against", "status"]
    out = []
    rows = df[df["impl"] == df["backend"]]
    bandwidth = env.get("copy_bytes_per_s")
    for key, g in groups(rows):
        measures = list(dict.fromkeys(t.against for t in targets if t.op == key["op"]))
        kernel = g[g["impl"] == KERNEL_BACKEND].set_index("resolution")
        if not measures or not {status_kind(st) for st in kernel["status"]} & {"ok", "oom", "error"}:
            continue  # no target for the op, or the kernel not run in this setting (e.g. a CPU sweep)
        for res, t in kernel.iterrows():
            at = g[(g["resolution"] == res) & (g["status"] == "ok")]
            rec = {**key, "resolution": int(res), "tokens": int(t["tokens"]), "status": t["status"]}
            for against in measures:
                goal, target = _goal(targets, key["op"], against, key["pass"], int(t["tokens"]), int(key["batch"]))
                if against == PEERS:
                    peers = at[at["impl"].isin(ATTENTION_PEERS)]
                    if peers.empty:
                        continue
                    best = peers.loc[peers["median_s"].idxmin()]
                    timed = sorted(peers["impl"])
                    out.append({**rec, "target": target, "measured": best["median_s"] / t["median_s"], "goal": goal,
                                "against": best["impl"] + (f" (of {', '.join(timed)})" if len(timed) > 1 else "")})
                elif against == COPY:
                    if bandwidth and (t["status"] != "ok" or np.isfinite(t["bytes_per_s"])):
                        out.append({**rec, "target": target, "against": COPY, "goal": goal,
                                    "measured": t["bytes_per_s"] / bandwidth})
                else:
                    base = at[at["impl"] == against]
                    if len(base):
                        out.append({**rec, "target": target, "against": against, "goal": goal,
                                    "measured": base["median_s"].iloc[0] / t["median_s"]})
    frame = pd.DataFrame(out, columns=cols)
    frame = sort_by_op(frame, ["op", "pass", "model", "dtype", "resolution", "batch"]).reset_index(drop=True)
    # True / False where a goal is set, None where not (object dtype keeps the three apart)
    frame["met"] = pd.Series([None if not np.isfinite(g) else bool(np.isfinite(m) and m >= g)
                              for m, g in zip(frame["measured"].astype(float), frame["goal"].astype(float))],
                             index=frame.index, dtype=object)
    return frame


def format_goal(value: float, against: str) -> str:
    """A goal as the report writes it: a percentage of the copy bandwidth, or a ratio."""
    return f"{100 * value:g}%" if against == COPY else f"{value:.2f}".removesuffix("0") + "×"


def _measure(against: str) -> str:
    if against == PEERS:
        return (f"the best median among {', '.join(ATTENTION_PEERS)} divided by {KERNEL_BACKEND}'s "
                f"(> 1: {KERNEL_BACKEND} is faster)")
    if against == COPY:
        return f"{KERNEL_BACKEND}'s bytes/s (bytes as in the GB/s tables) over the measured copy bandwidth"
    return f"the {against} backend's median divided by {KERNEL_BACKEND}'s"


def _where(t: Target) -> str:
    parts = [PASS_SHORT.get(t.pass_, t.pass_)] if t.pass_ else []
    if t.min_tokens is not None and t.below_tokens is not None:
        parts.append(f"{t.min_tokens:,} ≤ N < {t.below_tokens:,}")
    elif t.min_tokens is not None:
        parts.append(f"N ≥ {t.min_tokens:,}")
    elif t.below_tokens is not None:
        parts.append(f"N < {t.below_tokens:,}")
    if t.min_batch is not None:
        parts.append(f"batch ≥ {t.min_batch:,}")
    return f" ({', '.join(parts)})" if parts else ""


def targets_prose(targets: Sequence[Target] | None = None) -> str:
    """The targets (:data:`TARGETS` unless given) in words, one sentence per op: what each ratio is and
    its goals."""
    targets = TARGETS if targets is None else targets
    sentences = []
    for op in sorted(dict.fromkeys(t.op for t in targets), key=op_rank):
        clauses = []
        for against in dict.fromkeys(t.against for t in targets if t.op == op):
            goals = [f"≥ {format_goal(t.goal, against)}{_where(t)}" for t in targets
                     if t.op == op and t.against == against]
            clauses.append(f"{_measure(against)}, {', '.join(goals)}")
        name = OP_SHORT.get(op, op)
        sentences.append(f"{name[:1].upper() + name[1:]}: {'; '.join(clauses)}.")
    return " ".join(sentences) + " Where no goal applies, the goal column says none."
