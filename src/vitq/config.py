"""Quantization configs as frozen dataclasses: a spec per quantizer, chosen by ordered glob rules.

A :class:`QuantConfig` is an ordered list of :class:`QuantRule`. Every quantizer in a converted model has a dotted
name (``blocks.3.attn.qkv.weight_quantizer``, ``blocks.3.attn.v_quantizer``, ``blocks.3.mlp.fc2.input_quantizer``);
the first rule whose glob pattern matches the name gives its :class:`QuantSpec`, and a rule with ``spec=None`` (or
no matching rule) leaves that quantizer off, i.e. in float. ``exclude`` lists module globs that are not converted at
all. Configs load from YAML or JSON and round-trip through :meth:`QuantConfig.to_dict`.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from .errors import VitqError
from .granularity import Granularity, PerTensor, granularity_from_dict, granularity_to_dict
from .observers import OBSERVERS, make_observer
from .primitives import check_bits
from .schemes import get_scheme


@dataclass(frozen=True)
class QuantSpec:
    """How one quantizer quantizes: bit width, symmetry, signedness, granularity and the observer that calibrates it.

    ``scheme`` is ``uniform`` (affine integer grid); for non-negative activations such as the softmax output,
    ``log2`` / ``log_sqrt2`` (power-of-two levels, see ``primitives.fake_quantize_log``; scale = calibrated max);
    ``twin_uniform`` (two uniform grids for softmax and GELU outputs, :mod:`vitq.algorithms.twin_uniform`); or
    ``fp8_e4m3`` (scaled float8, symmetric, 8 bits only; the format of FP8 tensor-core GEMMs).
    ``strict=False`` allows the looser level sets of published code where vitq otherwise keeps at most
    ``2**bits`` levels (the log quantizers then add an exact zero beyond their ``2**bits`` powers, as RepQ-ViT does).
    ``signed=None`` decides when the qparams are solved: signed if the observed minimum is negative, else unsigned (so a
    post-softmax or post-GELU-like non-negative tensor gets all 2**bits levels). ``observer_args`` are keyword
    arguments of the observer, as a tuple of (name, value) pairs so the spec stays hashable.
    """

    bits: int = 8
    symmetric: bool = True
    granularity: Granularity = PerTensor()
    observer: str = "minmax"
    observer_args: tuple[tuple[str, Any], ...] = ()
    signed: Optional[bool] = None
    scheme: str = "uniform"
    strict: bool = True

    def __post_init__(self):
        check_bits(self.bits)
        for field, value in (("symmetric", self.symmetric), ("strict", self.strict)):
            if not isinstance(value, bool):
                raise VitqError(f"spec field {field!r} must be true or false, not {value!r}")
        if self.signed is not None and not isinstance(self.signed, bool):
            raise VitqError(f"spec field 'signed' must be true, false or null, not {self.signed!r}")
        if not isinstance(self.granularity, Granularity.__args__):
            raise VitqError(f"spec granularity must be a granularity, not {self.granularity!r}")
        get_scheme(self.scheme).check(self.bits, self.symmetric)
        if not isinstance(self.observer, str) or self.observer not in OBSERVERS:
            raise VitqError(f"unknown observer {self.observer!r} (known: {', '.join(OBSERVERS)})")
        if not self.symmetric and self.signed:
            raise VitqError("asymmetric quantization uses unsigned codes; drop signed=True")
        make_observer(self)  # its arguments and granularity are checked now, not after the data is loaded

    def to_dict(self) -> dict:
        d = {"bits": self.bits, "symmetric": self.symmetric, "granularity": granularity_to_dict(self.granularity),
             "observer": self.observer}
        if self.observer_args:
            d["observer_args"] = dict(self.observer_args)
        if self.signed is not None:
            d["signed"] = self.signed
        if self.scheme != "uniform":
            d["scheme"] = self.scheme
        if not self.strict:
            d["strict"] = False
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        if not isinstance(d, dict):
            raise VitqError(f"a spec must be a mapping of fields (bits, symmetric, ...), not {d!r}")
        known = {"bits", "symmetric", "granularity", "observer", "observer_args", "signed", "scheme", "strict"}
        extra = set(d) - known
        if extra:
            raise VitqError(f"unknown spec fields {sorted(extra)} (known: {sorted(known)})")
        args = d.get("observer_args", {})
        if not isinstance(args, dict):
            raise VitqError(f"spec observer_args must be a mapping, not {args!r}")
        return cls(bits=d.get("bits", 8), symmetric=d.get("symmetric", True),
                   granularity=granularity_from_dict(d.get("granularity", "per_tensor")),
                   observer=d.get("observer", "minmax"), observer_args=tuple(sorted(args.items())),
                   signed=d.get("signed"), scheme=d.get("scheme", "uniform"), strict=d.get("strict", True))


@dataclass(frozen=True)
class QuantRule:
    """``pattern`` (fnmatch glob on quantizer names) -> ``spec`` (None: leave in float).

    ``role`` (``weight``, ``activation`` or ``fixed``) says which bit override (``--w-bits``/``--a-bits``) applies.
    """

    pattern: str
    spec: Optional[QuantSpec]
    role: str = "activation"

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "spec": None if self.spec is None else self.spec.to_dict(), "role": self.role}

    def __post_init__(self):
        if not isinstance(self.pattern, str) or not self.pattern:
            raise VitqError(f"a rule pattern must be a non-empty glob string, not {self.pattern!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "QuantRule":
        if "pattern" not in d:
            raise VitqError(f"rule {d} has no 'pattern'")
        extra = set(d) - {"pattern", "spec", "role"}
        if extra:
            raise VitqError(f"unknown rule fields {sorted(extra)} (known: pattern, spec, role)")
        role = d.get("role", "weight" if str(d["pattern"]).endswith("weight_quantizer") else "activation")
        if role not in ("weight", "activation", "fixed"):
            raise VitqError(f"rule role must be weight, activation or fixed, not {role!r}")
        spec = d.get("spec")
        return cls(d["pattern"], None if spec is None else QuantSpec.from_dict(spec), role)


@dataclass(frozen=True)
class Transform:
    """One calibration algorithm of a recipe, by name, with keyword arguments (see :mod:`vitq.algorithms`).

    ``vitq.calibrate`` runs them in recipe order: some before the observer pass (``smoothquant`` rewrites float
    weights; ``repq`` rewrites them and fixes qparams), some after it (``hessian``: a scale search; ``gptq``,
    ``reconstruct``: weight rounding). Arguments are checked against the algorithm when the recipe is read.
    """

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        from .algorithms import check_transform

        check_transform(self.name, dict(self.args))

    def to_dict(self) -> dict:
        return {"name": self.name, **dict(self.args)}

    @classmethod
    def from_dict(cls, d) -> "Transform":
        if isinstance(d, str):
            return cls(d)
        if not isinstance(d, dict) or "name" not in d:
            raise VitqError(f"a transform is a name or a mapping with 'name', not {d!r}")
        return cls(d["name"], tuple(sorted((k, v) for k, v in d.items() if k != "name")))


@dataclass(frozen=True)
class QuantConfig:
    """A whole recipe: ordered rules (first match wins), the qkv mode and the modules left unconverted.

    ``qkv="split"`` gives Q, K and V their own quantizers right after the fused qkv Linear (and the qkv weight's
    three row blocks their own scales); ``qkv="fused"`` keeps one quantizer over the whole qkv output.
    ``transforms`` are the calibration algorithms run by ``vitq.quantize`` (see :class:`Transform`).
    """

    rules: tuple[QuantRule, ...]
    qkv: str = "split"
    exclude: tuple[str, ...] = ()
    name: str = "custom"
    transforms: tuple[Transform, ...] = ()

    def __post_init__(self):
        if self.qkv not in ("split", "fused"):
            raise VitqError(f"qkv must be 'split' or 'fused', not {self.qkv!r}")
        if isinstance(self.exclude, str):  # one glob, not a sequence of its letters
            object.__setattr__(self, "exclude", (self.exclude,))
        if not all(isinstance(p, str) and p for p in self.exclude):
            raise VitqError(f"exclude must be a list of module name globs, not {list(self.exclude)!r}")
        if not isinstance(self.name, str):
            raise VitqError(f"a recipe name must be a string, not {self.name!r}")

    def spec_for(self, quantizer_name: str) -> Optional[QuantSpec]:
        """The spec of the first rule matching ``quantizer_name`` (None when it stays float)."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(quantizer_name, rule.pattern):
                return rule.spec
        return None

    def excludes(self, module_name: str) -> bool:
        """True when ``module_name`` must stay a float module."""
        return any(fnmatch.fnmatchcase(module_name, p) for p in self.exclude)

    def with_bits(self, w_bits: Optional[int] = None, a_bits: Optional[int] = None) -> "QuantConfig":
        """The same recipe with weight and/or activation bit widths replaced (``fixed`` rules keep theirs)."""
        bits = {"weight": w_bits, "activation": a_bits}
        rules = tuple(
            replace(r, spec=replace(r.spec, bits=bits[r.role])) if r.spec is not None and bits.get(r.role) else r
            for r in self.rules)
        return replace(self, rules=rules)

    def bits(self, role: str) -> Optional[int]:
        """The bit width of the first enabled rule of ``role`` (for reports)."""
        return next((r.spec.bits for r in self.rules if r.role == role and r.spec is not None), None)

    def to_dict(self) -> dict:
        d = {"name": self.name, "qkv": self.qkv, "exclude": list(self.exclude),
             "rules": [r.to_dict() for r in self.rules]}
        if self.transforms:
            d["transforms"] = [t.to_dict() for t in self.transforms]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        if not isinstance(d, dict) or not isinstance(d.get("rules"), list) or \
                not all(isinstance(r, dict) for r in d["rules"]):
            raise VitqError("a recipe needs a 'rules' list of {pattern, spec} entries")
        known = {"name", "qkv", "exclude", "rules", "transforms"}
        extra = set(d) - known
        if extra:
            raise VitqError(f"unknown recipe fields {sorted(extra)} (known: {sorted(known)})")
        exclude = d.get("exclude", [])
        if isinstance(exclude, str):  # one glob, not a list of its letters
            exclude = [exclude]
        transforms = d.get("transforms", [])
        if not isinstance(exclude, list) or not isinstance(transforms, list):
            raise VitqError("a recipe's 'exclude' and 'transforms' are lists")
        return cls(rules=tuple(QuantRule.from_dict(r) for r in d["rules"]), qkv=d.get("qkv", "split"),
                   exclude=tuple(exclude), name=d.get("name", "custom"),
                   transforms=tuple(Transform.from_dict(t) for t in transforms))

    @classmethod
    def from_file(cls, path) -> "QuantConfig":
        """Load a recipe from a ``.yaml``/``.yml`` or ``.json`` file."""
        path = Path(path)
        if not path.is_file():
            raise VitqError(f"recipe file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
        try:
            text = path.read_text()
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as e:
            raise VitqError(f"cannot parse recipe {path}: {str(e).splitlines()[0]}") from e
        cfg = cls.from_dict(data)
        return cfg if cfg.name != "custom" else replace(cfg, name=path.stem)

