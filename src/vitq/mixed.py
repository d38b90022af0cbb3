"""Mixed precision: a bit width per layer, chosen to lose the least accuracy within a budget the user sets.

    config, report = vitq.mixed_precision(model, "best", calib, budget="w=4.5,a=4.5")
    qmodel = vitq.quantize(model, config, calib=calib)         # a normal recipe: saves, loads, analyzes, exports
    vitq.mixed.write_recipe(config, "mixed.yaml")               # editable, rerunnable

**Units.** The quant layers of the converted model that own an enabled quantizer (what
:meth:`vitq.analysis.mixer.Mixer.layer_names` lists): each Linear (its input and weight), the patch-embedding
Conv (its weight; the 8-bit image input is a ``fixed`` rule and never changes), each attention (Q, K, V) and each
``matmul_av`` (the softmax output). A unit takes one bit width ``b`` from the candidates for every quantizer of it
whose rule role is ``weight`` or ``activation``, with the spec the base recipe gives that quantizer at W\\ ``b``\\ A\\ ``b``
(so a preset's bit-dependent choices, e.g. ``best``'s twin-uniform softmax at 3 bits, carry over).

**Sensitivity**, on the calibration images only: for each candidate ``b``, the base recipe at W\\ ``b``\\ A\\ ``b`` is
quantized (without its ``reconstruct`` transform, which is costly and is kept for the final model), and for each
unit ``KL(float || model with only that unit quantized at b)`` is measured (:func:`vitq.analysis.studies.sensitivity`).

**Allocation**: an exact 0-1 integer program (a multiple-choice knapsack) solved by HiGHS through
``scipy.optimize.milp`` with a zero relative gap: one binary per (unit, bits), exactly one per unit, one linear
constraint per budget, minimizing the summed KL. The solver proves optimality for that model, so the result is the
best assignment under the assumption that per-layer KLs add up (true to first order for small, independent
perturbations: the KL is quadratic in the logit error and cross terms average out). A greedy on the marginal
KL/bit ratio has no such guarantee with several budgets, and the problem is tiny (units x candidates binaries,
e.g. 86 x 4 for a 12-block ViT), so the exact solve takes milliseconds. The chosen assignment is re-measured
(``measured_kl``: the KL of the whole mixed model, reconstruction left out) so the additivity can be checked.

**Budgets** (any combination, every one must hold): ``w=4.5`` average weight bits and ``a=4.5`` average
activation bits, both weighted by elements (weights: parameters; activations: elements of each quantized tensor
per image), and ``size=3.2MB`` the model size: quantized weights at their bits (packed) plus every other
parameter (biases, norms, embeddings) in float32; scales and zero points are not counted. A bare number ``4.5``
means ``w=4.5,a=4.5``.

**Result**: the base recipe's rules prefixed with one exact-name rule per quantizer of each unit (role ``fixed``,
so ``--w-bits``/``--a-bits`` do not flatten it again), named ``<base>-mixed``; it round-trips through
:meth:`QuantConfig.to_dict` and the saved ``vitq.json``, and keeps the base recipe's transforms (reconstruction
included).
"""
from __future__ import annotations

import fnmatch
import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import QuantConfig, QuantRule
from .convert import convert, quant_modules
from .errors import VitqError
from .nn import QuantAttention
from .primitives import check_bits

DEFAULT_CANDIDATES = (3, 4, 6, 8)
_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}


# ----- budget ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """Upper bounds: average weight bits ``w``, average activation bits ``a``, model size in bytes ``size``."""

    w: Optional[float] = None
    a: Optional[float] = None
    size: Optional[float] = None

    def __post_init__(self):
        if self.w is None and self.a is None and self.size is None:
            raise VitqError("a budget needs at least one of w=BITS, a=BITS, size=BYTES")
        for key in ("w", "a", "size"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise VitqError(f"budget {key} must be a positive number, not {v!r}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("w", "a", "size") if getattr(self, k) is not None}

    def __str__(self) -> str:
        parts = [f"w={self.w:g}" if self.w is not None else "", f"a={self.a:g}" if self.a is not None else "",
                 f"size={self.size:g}B" if self.size is not None else ""]
        return ",".join(p for p in parts if p)


def _number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise VitqError(f"budget {key}={text!r}: not a number") from None


def parse_budget(budget: Union[str, dict, Budget, float, int]) -> Budget:
    """``"w=4.5,a=4.5"``, ``"size=3.2MB"`` (B, KB, MB, GB decimal; KiB, MiB, GiB binary), any combination, or a bare
    number meaning the same average for weights and activations; also a dict with keys w, a, size, or a Budget."""
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, bool):
        raise VitqError(f"not a budget: {budget!r}")
    if isinstance(budget, (int, float)):
        return Budget(w=float(budget), a=float(budget))
    if isinstance(budget, dict):
        extra = set(budget) - {"w", "a", "size"}
        if extra:
            raise VitqError(f"unknown budget keys {sorted(extra)} (known: w, a, size)")
        return Budget(**{k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                         for k, v in budget.items()})
    if not isinstance(budget, str) or not budget.strip():
        raise VitqError(f"a budget is text like 'w=4.5,a=4.5' or 'size=3.2MB', not {budget!r}")
    text = budget.strip()
    if "=" not in text:
        v = _number("w,a", text)
        return Budget(w=v, a=v)
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not sep or key not in ("w", "a", "size"):
            raise VitqError(f"budget {budget!r}: {part.strip()!r} is not w=BITS, a=BITS or size=BYTES")
        if key in values:
            raise VitqError(f"budget {budget!r}: {key} given twice")
        if key == "size":
            m = re.fullmatch(r"([0-9.eE+-]+)\s*([a-zA-Z]*)", value)
            unit = m.group(2).lower() if m else None
            if not m or unit not in _UNITS:
                raise VitqError(f"budget size={value!r}: use a number of bytes with B, KB, MB, GB, KiB, MiB or GiB")
            values[key] = _number(key, m.group(1)) * _UNITS[unit]
        else:
            values[key] = _number(key, value)
    return Budget(**values)


def parse_candidates(candidates: Union[str, Iterable[int]]) -> tuple[int, ...]:
    """Sorted distinct candidate bit widths (``"3,4,6,8"`` or a sequence), each 2..8."""
    if isinstance(candidates, str):
        try:
            candidates = [int(s) for s in candidates.split(",") if s.strip()]
        except ValueError:
            raise VitqError(f"candidate bits must be a comma-separated list of integers, not {candidates!r}") from None
    out = tuple(sorted(set(int(b) for b in candidates)))
    if not out:
        raise VitqError("mixed precision needs at least one candidate bit width")
    for b in out:
        check_bits(b)
    return out


# ----- units and their costs -------------------------------------------------------------------------------------
@dataclass
class Unit:
    """One layer that takes one bit width: its quantizers (full names) and its costs per bit."""

    name: str
    quantizers: list[str]
    weight_elems: int = 0   # elements of its quantized weight
    act_elems: int = 0      # elements of its quantized activations, per image


def _rule_for(config: QuantConfig, name: str) -> Optional[QuantRule]:
    return next((r for r in config.rules if fnmatch.fnmatchcase(name, r.pattern)), None)


def _exact(name: str) -> str:
    """A glob matching exactly ``name`` (brackets, stars and question marks escaped)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


@torch.no_grad()
def units_of(model: nn.Module, config: QuantConfig, image: torch.Tensor, registry=None) -> tuple[list[Unit], int]:
    """The units of ``model`` converted with ``config`` and their costs, measured with forward hooks on one image;
    also the bytes of the parameters that stay float (float32)."""
    qm = convert(model, config, registry=registry).eval()
    for m in qm.modules():
        if isinstance(m, QuantAttention):
            m.fused_attn = False  # every quantizer point is called, the softmax output included
    units: list[Unit] = []
    owner: dict[str, Unit] = {}
    for name, mod in quant_modules(qm):
        qs = []
        for qname, q in mod.own_quantizers():
            full = f"{name}.{qname}"
            rule = _rule_for(config, full)
            if q.enabled and rule is not None and rule.role in ("weight", "activation"):
                qs.append((full, q))
        if not qs:
            continue
        unit = Unit(name, [n for n, _ in qs])
        for full, q in qs:
            owner[full] = unit
            if q.is_weight:
                unit.weight_elems += int(mod.weight.numel())
        units.append(unit)
    hooks = []
    for name, q in qm.named_modules():
        if name in owner and not q.is_weight:
            hooks.append(q.register_forward_hook(
                lambda m, inp, out, u=owner[name]: setattr(u, "act_elems", u.act_elems + inp[0].numel())))
    try:
        qm(image[:1].to(next(qm.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    quantized = {f"{u.name}.weight" for u in units if u.weight_elems}
    float_bytes = sum(4 * p.numel() for n, p in model.named_parameters() if n not in quantized)
    return units, float_bytes


def costs(units: list[Unit], assignment: dict[str, int], float_bytes: int = 0) -> dict:
    """Element-weighted average weight and activation bits, packed weight bytes and model bytes of an assignment."""
    w_tot = sum(u.weight_elems for u in units)
    a_tot = sum(u.act_elems for u in units)
    w_bits = sum(u.weight_elems * assignment[u.name] for u in units)
    a_bits = sum(u.act_elems * assignment[u.name] for u in units)
    return {"avg_w_bits": w_bits / w_tot if w_tot else None, "avg_a_bits": a_bits / a_tot if a_tot else None,
            "weight_bytes": w_bits / 8, "size_bytes": w_bits / 8 + float_bytes}


# ----- allocation ------------------------------------------------------------------------------------------------
def _rows(units: list[Unit], budget: Budget, float_bytes: int) -> list[tuple[str, dict, float, str]]:
    """Budget constraints as (key, {unit: coefficient per bit}, bound, label): sum coef * bits <= bound."""
    rows = []
    w_tot = sum(u.weight_elems for u in units)
    a_tot = sum(u.act_elems for u in units)
    if budget.w is not None and w_tot:
        rows.append(("w", {u.name: u.weight_elems / w_tot for u in units}, budget.w, "average weight bits"))
    if budget.a is not None and a_tot:
        rows.append(("a", {u.name: u.act_elems / a_tot for u in units}, budget.a, "average activation bits"))
    if budget.size is not None:
        rows.append(("size", {u.name: u.weight_elems / 8 for u in units}, budget.size - float_bytes,
                     "model size in bytes"))
    return rows


def allocate(units: list[Unit], kl: dict[str, dict[int, float]], budget: Budget,
             float_bytes: int = 0, time_limit: float = 60.0) -> dict[str, int]:
    """The assignment {unit: bits} minimizing sum kl[unit][bits] under ``budget``: an exact 0-1 integer program
    (HiGHS via scipy.optimize.milp, zero gap). Refuses (one line) a budget below every unit at its fewest bits."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    budget = parse_budget(budget)
    cands = sorted({b for u in units for b in kl[u.name]})
    if not units:
        raise VitqError("the recipe quantizes no layer whose bits a mixed-precision search could choose")
    lowest = {u.name: min(kl[u.name]) for u in units}
    rows = _rows(units, budget, float_bytes)
    for key, coef, bound, label in rows:
        floor = sum(coef[n] * b for n, b in lowest.items())
        if floor > bound * (1 + 1e-12):
            smallest = floor + (float_bytes if key == "size" else 0)
            shown = f"{smallest:.0f} bytes ({smallest / 1e6:.2f} MB)" if key == "size" else f"{smallest:.3f}"
            raise VitqError(f"budget {key}={getattr(budget, key):g} is infeasible: the smallest {label} with "
                            f"candidates {','.join(map(str, cands))} is {shown} (every layer at its fewest bits)")
    index = [(u.name, b) for u in units for b in sorted(kl[u.name])]
    n = len(index)
    scale = max((abs(v) for d in kl.values() for v in d.values()), default=1.0) or 1.0
    c = np.array([kl[u][b] / scale for u, b in index])  # O(1) objective: HiGHS's absolute tolerances are 1e-6
    one_hot = np.zeros((len(units), n))
    pos = {u.name: i for i, u in enumerate(units)}
    for j, (u, _) in enumerate(index):
        one_hot[pos[u], j] = 1.0
    A = np.array([[coef[u] * b for u, b in index] for _, coef, _, _ in rows]).reshape(len(rows), n)
    # normalize each budget row (HiGHS feasibility tolerance is absolute: 1e-7 after scaling to O(1))
    norms = np.maximum(np.abs(A).max(axis=1), 1e-30) if len(rows) else np.ones(0)
    ub = np.array([bound for _, _, bound, _ in rows], dtype=float)
    for _ in range(8):  # tighten a bound the solver met only within its tolerance, and solve again
        cons = [LinearConstraint(one_hot, 1, 1)]
        if len(rows):
            cons.append(LinearConstraint(A / norms[:, None], -np.inf, ub / norms))
        res = milp(c, integrality=np.ones(n), bounds=Bounds(0, 1), constraints=cons,
                   options={"mip_rel_gap": 0.0, "time_limit": time_limit})
        if res.x is None:
            raise VitqError(f"mixed-precision allocation failed: {res.message}")
        chosen = {index[j][0]: index[j][1] for j in np.flatnonzero(res.x > 0.5)}
        excess = A @ np.array([1.0 if chosen[u] == b else 0.0 for u, b in index]) - \
            np.array([bound for _, _, bound, _ in rows], dtype=float)
        bad = excess > 1e-12 * np.maximum(np.abs(ub), 1)
        if not bad.any():
            if res.status != 0:
                raise VitqError(f"mixed-precision allocation did not prove optimality: {res.message}")
            return {u.name: chosen[u.name] for u in units}
        ub = ub - np.where(bad, excess + 1e-9 * norms, 0.0)
    raise VitqError("mixed-precision allocation could not meet the budget within the solver's tolerance")


# ----- the search ------------------------------------------------------------------------------------------------
BaseSpec = Union[str, QuantConfig, Callable[[int], QuantConfig]]


def base_at(base: BaseSpec) -> tuple[Callable[[int], QuantConfig], str]:
    """(bits -> the base recipe at W``bits``A``bits``, the base's name) for a preset name, a recipe file, a
    QuantConfig (``with_bits``) or a callable."""
    from .recipes import preset

    if callable(base) and not isinstance(base, QuantConfig):
        return base, getattr(base, "vitq_name", None) or base(8).name
    if isinstance(base, (str, Path)) and not str(base).endswith((".yaml", ".yml", ".json")):
        name = str(base)
        preset(name)  # an unknown name fails here, in one line
        return (lambda b: preset(name, b, b)), name
    if isinstance(base, (str, Path)):
        base = QuantConfig.from_file(base)
    if not isinstance(base, QuantConfig):
        raise VitqError(f"a mixed-precision base is a preset name, a recipe or a QuantConfig, not {base!r}")
    return (lambda b: base.with_bits(b, b)), base.name


def _without_reconstruction(config: QuantConfig) -> QuantConfig:
    return replace(config, transforms=tuple(t for t in config.transforms if t.name != "reconstruct"))


def mixed_config(at: Callable[[int], QuantConfig], units: list[Unit], assignment: dict[str, int], name: str,
                 reference_bits: int) -> QuantConfig:
    """The recipe of an assignment: one exact-name ``fixed`` rule per quantizer of each unit (its spec from the
    base at the unit's bits), then the base's rules, transforms, qkv and exclusions at ``reference_bits``."""
    rules = []
    for u in units:
        cfg = at(assignment[u.name])
        for q in u.quantizers:
            spec = cfg.spec_for(q)
            if spec is None:
                raise VitqError(f"{q}: the base recipe leaves it in float at {assignment[u.name]} bits")
            rules.append(QuantRule(_exact(q), spec, "fixed"))
    ref = at(reference_bits)
    return replace(ref, rules=tuple(rules) + ref.rules, name=f"{name}-mixed")


def _calib_batches(calib: Iterable, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for b in calib:
        x = b[0] if isinstance(b, (tuple, list)) else b
        y = b[1] if isinstance(b, (tuple, list)) and len(b) > 1 else torch.zeros(len(x), dtype=torch.long)
        out.append((x.to(device), y))
    if not out:
        raise VitqError("mixed precision needs calibration images (calib is empty)")
    return out


@torch.no_grad()
def _kl(model: nn.Module, qmodel: nn.Module, images: torch.Tensor) -> float:
    ref = F.log_softmax(model(images), -1)
    out = F.log_softmax(qmodel(images), -1)
    return max(float(F.kl_div(out, ref, log_target=True, reduction="batchmean")), 0.0)


def mixed_precision(model: nn.Module, base: BaseSpec, calib: Iterable, budget, candidates=DEFAULT_CANDIDATES,
                    probe_images: int = 64, verify: bool = True, device=None, registry=None,
                    show_progress: bool = True, sensitivity: Optional[dict] = None) -> tuple[QuantConfig, dict]:
    """Choose a bit width per layer of ``model`` from ``candidates`` to minimize the summed per-layer KL on the
    calibration images within ``budget`` (see module docstring). ``base`` is a preset name (``"best"``), a recipe
    file, a QuantConfig (its bits replaced with ``with_bits``) or a callable ``bits -> QuantConfig``.

    Returns the mixed recipe (quantize it with :func:`vitq.quantize`) and a report: budget, assignment, achieved
    average bits and sizes, predicted (summed) and measured KL, per-unit KL per candidate, and timings.
    ``sensitivity``: the ``sensitivity`` of an earlier report on the same model, base and calibration images, to
    try other budgets without measuring again."""
    from .analysis.mixer import Mixer
    from .analysis.studies import sensitivity as measure
    from .pipeline import quantize

    t_start = time.perf_counter()
    budget = parse_budget(budget)
    cands = parse_candidates(candidates)
    if probe_images < 1:
        raise VitqError(f"probe_images must be at least 1, got {probe_images}")
    at, name = base_at(base)
    configs = {b: at(b) for b in cands}  # a preset that refuses these bits (fp8) fails here, before any work
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    batches = _calib_batches(calib, device)
    images = torch.cat([x for x, _ in batches])[:probe_images]

    units, float_bytes = units_of(model, configs[cands[-1]], images, registry)
    for b in cands[:-1]:
        other = {u.name: u.quantizers for u in units_of(model, configs[b], images, registry)[0]}
        if other != {u.name: u.quantizers for u in units}:
            raise VitqError(f"the base recipe quantizes other tensors at {b} bits than at {cands[-1]} bits: "
                            "mixed precision needs the same coverage at every candidate")
    # infeasible budgets are refused here, before the sensitivity pass
    allocate(units, {u.name: {b: 0.0 for b in cands} for u in units}, budget, float_bytes)
    t_costs = time.perf_counter()

    kl: dict[str, dict[int, float]] = {u.name: {} for u in units}
    if sensitivity is not None:
        for u in units:
            kl[u.name] = {b: float(v) for b, v in ((int(k), v) for k, v in sensitivity.get(u.name, {}).items())
                          if b in cands}
    for b in (cands if sensitivity is None else ()):
        qm = quantize(model, _without_reconstruction(configs[b]), calib=batches, device=device,
                      show_progress=show_progress, registry=registry)
        for row in measure(Mixer(model, qm), images, show_progress=show_progress):
            if row["layer"] in kl:
                kl[row["layer"]][b] = row["kl"]
        del qm
    missing = [u.name for u in units if len(kl[u.name]) != len(cands)]
    if missing:
        raise VitqError(f"no sensitivity measured for {missing[0]} at every candidate bit width")
    t_sens = time.perf_counter()

    assignment = allocate(units, kl, budget, float_bytes)
    t_alloc = time.perf_counter()
    config = mixed_config(at, units, assignment, name, reference_bits=cands[-1])

    report = {
        "base": name, "budget": budget.to_dict(), "candidates": list(cands), "method":
            "exact 0-1 integer program (multiple-choice knapsack), scipy.optimize.milp / HiGHS, mip_rel_gap=0",
        "probe_images": int(len(images)), "calib_images": int(sum(len(x) for x, _ in batches)),
        "assignment": dict(assignment),
        "layers_per_bits": {str(b): sum(v == b for v in assignment.values()) for b in cands},
        **costs(units, assignment, float_bytes),
        "predicted_kl": sum(kl[u][b] for u, b in assignment.items()),
        "uniform": {str(b): {**costs(units, {u.name: b for u in units}, float_bytes),
                             "predicted_kl": sum(kl[u.name][b] for u in units)} for b in cands},
        "sensitivity": {u: {str(b): v for b, v in d.items()} for u, d in kl.items()},
        "weight_elements": {u.name: u.weight_elems for u in units},
        "activation_elements_per_image": {u.name: u.act_elems for u in units},
        "float_bytes": float_bytes,
    }
    if verify:
        qm = quantize(model, _without_reconstruction(config), calib=batches, device=device,
                      show_progress=show_progress, registry=registry)
        report["measured_kl"] = _kl(model, qm, images)
        del qm
    t_end = time.perf_counter()
    report["seconds"] = {"costs": t_costs - t_start, "sensitivity": t_sens - t_costs, "allocate": t_alloc - t_sens,
                         "verify": t_end - t_alloc, "total": t_end - t_start}
    return config, report


def write_recipe(config: QuantConfig, path, report: Optional[dict] = None) -> Path:
    """Write ``config`` as a YAML recipe (``vitq quantize --recipe PATH`` reruns it; edit the bits freely)."""
    import yaml

    path = Path(path)
    head = ["# vitq mixed-precision recipe: the first rules give each layer's quantizers their bits (exact names,",
            "# first match wins); the rules after them are the base recipe's. Edit and rerun with --recipe."]
    if report:
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        head.append(f"# budget {report.get('budget')}: average weight bits {fmt(report.get('avg_w_bits'))}, "
                    f"activation bits {fmt(report.get('avg_a_bits'))}, {report.get('size_bytes', 0) / 1e6:.3f} MB")
    path.write_text("\n".join(head) + "\n" + yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path
