"""Quantization-aware (re)training with BCQ: fake quantization of a model's weight matrices.

The BCQ math is :func:`ondevice.bcq.quantize` (numpy, float64); this module only
moves tensors to numpy and back, so training sees exactly the matrices that
:func:`export_bcq` hands to the packer.

* :class:`BCQFakeQuant` is a ``torch.nn.utils.parametrize`` parametrization.  In
  ``"ste"`` mode it returns the quantized weight ``q(w)`` in the forward pass and
  passes the gradient straight through to the fp32 latent weight ``w``
  (straight-through estimator).  ``q(w)`` is cached and recomputed only every
  ``refresh_every`` optimizer steps (``refresh_every=1``: every step), which is both
  the paper's "quantize every N steps" regularization variant and what makes
  slow methods (alternating) affordable.  Steps are counted by
  :func:`fake_quant_step` (call it after ``optimizer.step()``, or let
  :func:`attach_optimizer` do it).  The cache is kept in the BCQ form (packed
  signs, alpha, offset) in persistent buffers together with the step counters,
  so ``state_dict()`` / ``load_state_dict()`` resume bit-identically.
* ``"alpha"`` mode (AlphaTuning): the sign planes are frozen buffers and the
  scales ``alpha`` (per row, plane and group) are ``nn.Parameter``s; the weight
  is ``sum_i alpha_i B_i (+ offset)``, so gradients reach alpha only and the
  latent weight is left untouched.
* :func:`apply_fake_quant` attaches one parametrization per distinct tensor
  (the tied embedding / decoder embedding / output projection share one), and
  :func:`remove_fake_quant` takes them off, optionally baking the quantized
  values into the plain parameters.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import bcq
from ..errors import ConfigError

__all__ = ["bcq_quantize_result", "bcq_quantize_tensor", "BCQFakeQuant", "apply_fake_quant", "apply_plan",
           "remove_fake_quant", "export_bcq", "fake_quant_modules", "fake_quant_step", "attach_optimizer",
           "to_alpha_tuning", "alpha_parameters", "MODES"]

MODES = ("ste", "alpha")
ALPHA_DTYPES = ("float32", "float16")


def _to_numpy(w: Tensor) -> np.ndarray:
    return w.detach().to(device="cpu", dtype=torch.float64).numpy()


def _round_scales(r: bcq.BCQResult, alpha_dtype: str) -> bcq.BCQResult:
    """The result with alpha/offset rounded to ``alpha_dtype`` (what a float16 ``.bcq`` file stores)."""
    if alpha_dtype == "float32":
        return r
    if alpha_dtype != "float16":
        raise ConfigError(f"alpha_dtype must be one of {', '.join(ALPHA_DTYPES)}, got {alpha_dtype!r}")
    off = None if r.offset is None else r.offset.astype(np.float16).astype(np.float32)
    return bcq.BCQResult(r.signs, r.alpha.astype(np.float16).astype(np.float32), off, r.row_bits, r.group_size)


def bcq_quantize_result(w: Tensor, bits, group_size: int | None = None, method: str = "alternating",
                        offset: bool = False, iters: int = 15, alpha_dtype: str = "float32") -> bcq.BCQResult:
    """:func:`ondevice.bcq.quantize` of a torch matrix (``bits``: int, or per-row ints/tensor)."""
    if isinstance(bits, Tensor):
        bits = bits.detach().cpu().numpy()
    return _round_scales(bcq.quantize(_to_numpy(w), bits, group_size=group_size, method=method, offset=offset,
                                      iters=iters), alpha_dtype)


def bcq_quantize_tensor(w: Tensor, bits, group_size: int | None = None, method: str = "alternating",
                        offset: bool = False, iters: int = 15, alpha_dtype: str = "float32") -> Tensor:
    """The BCQ approximation of ``w`` (same shape, dtype and device), ``bcq.quantize(...).dequantize()``."""
    r = bcq_quantize_result(w, bits, group_size, method, offset, iters, alpha_dtype)
    return torch.from_numpy(r.dequantize()).to(device=w.device, dtype=w.dtype)


def _expand_groups(t: Tensor, group_size: int, cols: int) -> Tensor:
    """[..., G] -> [..., cols]: each group value repeated over its columns (as numpy.repeat + slice)."""
    return t.repeat_interleave(group_size, dim=-1)[..., :cols]


_SHIFTS = torch.arange(8, dtype=torch.uint8)


def _unpack_plane(packed: Tensor, cols: int) -> Tensor:
    """uint8 [N, ceil(cols/8)] (numpy.packbits bitorder='little') -> bool [N, cols]."""
    bits = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(packed.shape[0], -1)[:, :cols].bool()


class BCQFakeQuant(nn.Module):
    """Parametrization ``w -> q(w)`` for one weight matrix [N, K] (see the module docstring).

    ``bits``: int or one value per row (1..4).  ``mode``: ``"ste"`` (train the latent weight through
    the straight-through estimator) or ``"alpha"`` (AlphaTuning: train the scales only).
    ``alpha_dtype="float16"`` makes training see scales (and offsets) rounded as a float16 file
    stores them.  ``train_offset`` (alpha mode) also makes the offsets trainable.
    """

    def __init__(self, weight: Tensor, bits, group_size: int | None = None, method: str = "alternating",
                 offset: bool = False, iters: int = 15, refresh_every: int = 1, mode: str = "ste",
                 alpha_dtype: str = "float32", train_offset: bool = False):
        super().__init__()
        if weight.dim() != 2:
            raise ConfigError(f"BCQFakeQuant needs a 2-D weight, got shape {tuple(weight.shape)}")
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
            raise ConfigError(f"refresh_every must be an integer >= 1, got {refresh_every!r}")
        if alpha_dtype not in ALPHA_DTYPES:
            raise ConfigError(f"alpha_dtype must be one of {', '.join(ALPHA_DTYPES)}, got {alpha_dtype!r}")
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                       or group_size < 1):
            raise ConfigError(f"group_size must be None or a positive integer, got {group_size!r}")
        rows, cols = (int(s) for s in weight.shape)
        if isinstance(bits, Tensor):
            bits = bits.detach().cpu().numpy()
        row_bits = bcq._check_bits(bits, rows)  # QuantizationError (a ValueError) when invalid
        self.rows, self.cols = rows, cols
        self.group_size = cols if group_size is None else min(int(group_size), cols)
        self.groups = -(-cols // self.group_size)
        self.method, self.use_offset, self.iters = method, bool(offset), int(iters)
        self.refresh_every, self.alpha_dtype = int(refresh_every), alpha_dtype
        self.mode = "ste"
        self.num_refreshes = 0  # quantizations run by this object (not saved; for tests and logs)
        qmax = int(row_bits.max())
        dev = weight.device
        self.register_buffer("row_bits", torch.from_numpy(row_bits.copy()).to(dev))
        self.register_buffer("signs", torch.zeros(rows, qmax, -(-cols // 8), dtype=torch.uint8, device=dev))
        self.register_buffer("alpha", torch.zeros(rows, qmax, self.groups, dtype=torch.float32, device=dev))
        self.register_buffer("offset", torch.zeros(rows, self.groups, dtype=torch.float32, device=dev)
                             if self.use_offset else None)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64, device=dev))
        self.register_buffer("quantized_at", torch.full((), -1, dtype=torch.int64, device=dev))
        self.register_buffer("plane_mask", torch.arange(qmax, device=dev)[None, :] < self.row_bits[:, None].long(),
                             persistent=False)
        self._q: Tensor | None = None  # cached dequantized weight (rebuilt from the buffers when missing)
        self.refresh(weight)
        if mode == "alpha":
            self.freeze_signs(train_offset)

    def extra_repr(self) -> str:
        return (f"{self.rows}x{self.cols}, bits={self.bits:g}, group_size={self.group_size}, method={self.method}, "
                f"offset={self.use_offset}, mode={self.mode}, refresh_every={self.refresh_every}")

    @property
    def bits(self) -> float:
        return float(self.row_bits.float().mean())

    # -- quantization state
    def refresh(self, w: Tensor) -> None:
        """Quantize ``w`` now (ste mode) and make the result the cache; counts as done at this step."""
        if self.mode != "ste":
            raise ConfigError("refresh() is for ste mode; alpha mode keeps its sign planes frozen")
        r = bcq_quantize_result(w, self.row_bits.cpu().numpy(), self.group_size, self.method, self.use_offset,
                                self.iters, self.alpha_dtype)
        dev = self.signs.device
        with torch.no_grad():
            self.signs.copy_(torch.from_numpy(np.packbits(r.signs, axis=2, bitorder="little")).to(dev))
            self.alpha.copy_(torch.from_numpy(r.alpha).to(dev))
            if self.offset is not None:
                self.offset.copy_(torch.from_numpy(r.offset).to(dev))
            self.quantized_at.copy_(self.step)
        self._q = torch.from_numpy(r.dequantize()).to(device=w.device, dtype=w.dtype)
        self.num_refreshes += 1

    def due(self) -> bool:
        """Whether the next forward re-quantizes (ste mode): never quantized, or ``refresh_every``
        steps have passed since the cached quantization."""
        if self.mode != "ste":
            return False
        at = int(self.quantized_at)
        return at < 0 or int(self.step) - at >= self.refresh_every

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` optimizer steps (see :func:`fake_quant_step`)."""
        with torch.no_grad():
            self.step.add_(int(steps))

    def dequantize(self) -> Tensor:
        """``offset + sum_i alpha_i B_i`` from the stored state: float32 [N, K], differentiable in alpha
        mode.  Element for element the same arithmetic as :meth:`ondevice.bcq.BCQResult.dequantize`."""
        alpha = self.alpha
        if self.mode == "alpha":
            alpha = torch.where(self.plane_mask[:, :, None], alpha, torch.zeros_like(alpha))
            if self.alpha_dtype == "float16":  # train through the float16 rounding of the stored scales
                alpha = alpha + (alpha.detach().half().float() - alpha.detach())
        out = torch.zeros(self.rows, self.cols, dtype=torch.float32, device=alpha.device)
        if self.offset is not None:
            off = self.offset
            if self.mode == "alpha" and self.alpha_dtype == "float16":
                off = off + (off.detach().half().float() - off.detach())
            out = out + _expand_groups(off, self.group_size, self.cols)
        for i in range(self.signs.shape[1]):
            a = _expand_groups(alpha[:, i], self.group_size, self.cols)
            out = out + torch.where(_unpack_plane(self.signs[:, i], self.cols), a, -a)
        return out

    def quantized(self, w: Tensor) -> Tensor:
        """The quantized weight the forward pass uses now (re-quantizing first if due), without autograd
        in ste mode."""
        if self.mode == "alpha":
            return self.dequantize().to(w.dtype)
        if self.due():
            self.refresh(w)
        if self._q is None or self._q.device != w.device or self._q.dtype != w.dtype:
            with torch.no_grad():
                self._q = self.dequantize().to(device=w.device, dtype=w.dtype)
        return self._q

    def forward(self, w: Tensor) -> Tensor:
        if self.mode == "alpha":
            return self.dequantize().to(w.dtype)
        q = self.quantized(w)
        # Straight-through estimator: the value is exactly q (w - w.detach() is +0), the gradient
        # w.r.t. w is the identity, i.e. dL/dw = dL/dq.
        return q + (w - w.detach())

    def result(self, w: Tensor | None = None) -> bcq.BCQResult:
        """The current BCQ representation (alphas >= 0, as :func:`ondevice.bcq.quantize` returns them).
        Pass the latent weight ``w`` to re-quantize first when a refresh is due (ste mode)."""
        if w is not None and self.due():
            self.refresh(w)
        with torch.no_grad():
            signs = np.stack([_unpack_plane(self.signs[:, i], self.cols).cpu().numpy()
                              for i in range(self.signs.shape[1])], axis=1)
            alpha_t = self.alpha.detach()
            if self.mode == "alpha":
                alpha_t = torch.where(self.plane_mask[:, :, None], alpha_t, torch.zeros_like(alpha_t))
                if self.alpha_dtype == "float16":
                    alpha_t = alpha_t.half().float()
            alpha = alpha_t.cpu().numpy().astype(np.float32)
            offset = None
            if self.offset is not None:
                off_t = self.offset.detach()
                if self.mode == "alpha" and self.alpha_dtype == "float16":
                    off_t = off_t.half().float()
                offset = off_t.cpu().numpy().astype(np.float32)
        neg = alpha < 0  # trained scales may turn negative: flip that plane's signs in the group
        if neg.any():
            flip = np.repeat(neg, self.group_size, axis=2)[:, :, :self.cols]
            signs = signs ^ flip
            alpha = np.abs(alpha)
        return bcq.BCQResult(signs, alpha, offset, self.row_bits.cpu().numpy().astype(np.uint8), self.group_size)

    def freeze_signs(self, train_offset: bool = False) -> None:
        """Switch to alpha mode (AlphaTuning): signs stay as they are, alpha becomes a Parameter."""
        if self.mode == "alpha":
            return
        alpha = self.alpha.detach().clone()
        del self._buffers["alpha"]
        self.alpha = nn.Parameter(alpha)
        if train_offset and self.offset is not None:
            off = self.offset.detach().clone()
            del self._buffers["offset"]
            self.offset = nn.Parameter(off)
        self.mode = "alpha"
        self._q = None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._q = None  # rebuilt from the loaded signs/alpha/offset on the next forward
        self.plane_mask = torch.arange(self.signs.shape[1], device=self.row_bits.device)[None, :] \
            < self.row_bits[:, None].long()


# --------------------------------------------------------------------------- model-level helpers


def fake_quant_modules(model: nn.Module) -> Iterable[tuple[str, nn.Module, BCQFakeQuant]]:
    """(module name, module, parametrization) for every weight parametrized with BCQFakeQuant
    (a parametrization shared by tied modules is listed once per module)."""
    for mname, module in model.named_modules(remove_duplicate=False):
        plist = getattr(module, "parametrizations", None)
        if plist is None or "weight" not in plist:
            continue
        for p in plist["weight"]:
            if isinstance(p, BCQFakeQuant):
                yield mname, module, p


def _distinct(model: nn.Module) -> dict[int, tuple[str, list[nn.Module], BCQFakeQuant, Tensor]]:
    """id(parametrization) -> (canonical weight name, modules, parametrization, latent weight)."""
    out: dict[int, Any] = {}
    for mname, module, p in fake_quant_modules(model):
        entry = out.get(id(p))
        if entry is None:
            out[id(p)] = (mname + ".weight", [module], p, module.parametrizations["weight"].original)
        elif not any(m is module for m in entry[1]):
            entry[1].append(module)
    return out


def fake_quant_step(model: nn.Module, steps: int = 1) -> None:
    """Count optimizer steps for every BCQFakeQuant of ``model`` (each shared one once)."""
    for _, _, p, _ in _distinct(model).values():
        p.advance(steps)


def attach_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer):
    """Call :func:`fake_quant_step` after every ``optimizer.step()``; returns the hook handle."""
    return optimizer.register_step_post_hook(lambda *_: fake_quant_step(model))


def alpha_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable AlphaTuning parameters (alpha, and offsets where trained) of ``model``."""
    out, seen = [], set()
    for _, _, p, _ in _distinct(model).values():
        for t in (p.alpha, p.offset):
            if isinstance(t, nn.Parameter) and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    return out


def _matrix_modules(model: nn.Module) -> dict[str, tuple[Tensor, list[nn.Module], list[str]]]:
    """canonical weight name -> (stored weight, distinct modules using it, every alias name)."""
    from .plan import _module_tree_matrices

    by_id: dict[int, tuple[str, Tensor, list[nn.Module], list[str]]] = {}
    for mname, module, w in _module_tree_matrices(model):
        e = by_id.setdefault(id(w), (mname + ".weight", w, [], []))
        if not any(m is module for m in e[2]):
            e[2].append(module)
        e[3].append(mname + ".weight")
    return {name: (w, mods, aliases) for name, w, mods, aliases in by_id.values()}


def _resolve(model: nn.Module, assignment: Mapping[str, Any]):
    """[(canonical name, weight, modules, bits)] for the assignment's keys (aliases of tied weights ok)."""
    mats = _matrix_modules(model)
    alias = {a: name for name, (_, _, aliases) in mats.items() for a in aliases}
    out: dict[str, Any] = {}
    for key, bits in assignment.items():
        name = alias.get(key)
        if name is None:
            raise ConfigError(f"{key} is not the weight of a Linear/Embedding module of this model")
        if name in out and not np.array_equal(np.asarray(out[name][3]), np.asarray(bits)):
            raise ConfigError(f"{key} is tied to {name} but is assigned different bits")
        w, mods, _ = mats[name]
        out[name] = (name, w, mods, bits)
    return list(out.values())


def apply_fake_quant(model: nn.Module, assignment: Mapping[str, Any], group_size: int | None = None,
                     method: str = "alternating", offset: bool = False, iters: int = 15, refresh_every: int = 1,
                     mode: str = "ste", alpha_dtype: str = "float32",
                     train_offset: bool = False) -> dict[str, BCQFakeQuant]:
    """Parametrize the assigned weights (``{param name: bits}``, e.g. from ``QuantPlan.assign``) with
    :class:`BCQFakeQuant`; returns ``{name: parametrization}``.  The model's forward (encode, decode,
    the tied embedding and output projection) then uses the quantized weights.  Each weight is
    quantized once here.  In alpha mode the latent weights stop requiring grad."""
    resolved = _resolve(model, assignment)
    for name, w, mods, _ in resolved:
        if any(parametrize.is_parametrized(m, "weight") for m in mods):
            raise ConfigError(f"{name} is already parametrized (remove_fake_quant first)")
    out: dict[str, BCQFakeQuant] = {}
    for name, w, mods, bits in resolved:
        p = BCQFakeQuant(w.detach(), bits, group_size=group_size, method=method, offset=offset, iters=iters,
                         refresh_every=refresh_every, mode=mode, alpha_dtype=alpha_dtype,
                         train_offset=train_offset)
        for m in mods:
            parametrize.register_parametrization(m, "weight", p)
        if mode == "alpha":
            mods[0].parametrizations["weight"].original.requires_grad_(False)
        out[name] = p
    return out


def apply_plan(model: nn.Module, plan, frequencies=None, **kwargs) -> dict[str, BCQFakeQuant]:
    """:func:`apply_fake_quant` with a :class:`~ondevice.quant.plan.QuantPlan`'s assignment and options
    (``kwargs``: refresh_every, mode, iters, train_offset)."""
    return apply_fake_quant(model, plan.assign(model, frequencies), group_size=plan.group_size,
                            method=plan.method, offset=plan.offset, alpha_dtype=plan.alpha_dtype, **kwargs)


def to_alpha_tuning(model: nn.Module, train_offset: bool = False) -> list[nn.Parameter]:
    """Switch every ste-mode parametrization to AlphaTuning, keeping its current signs and scales
    (re-quantizing first where a refresh is due); freezes the latent weights.  Returns the alphas."""
    for _, mods, p, w in _distinct(model).values():
        if p.mode == "ste" and p.due():
            p.refresh(w)
        p.freeze_signs(train_offset)
        w.requires_grad_(False)
    return alpha_parameters(model)


def _unparametrize_weight(module: nn.Module) -> None:
    """Put the latent ``weight`` back as a plain parameter.

    ``torch.nn.utils.parametrize.remove_parametrizations`` deletes the ``weight`` property from the
    module's generated class, which ``copy.deepcopy`` shares between a module and its copies, so
    removing it from one copy breaks the others.  When ``weight`` is the module's only parametrized
    tensor we restore the module's own class instead and leave the shared class alone."""
    plists = module.parametrizations
    if len(plists) != 1:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        return
    original = plists["weight"].original
    orig_cls = module.__class__.__bases__[0]  # the class parametrize derived the property class from
    del module.parametrizations
    module.__class__ = orig_cls
    if isinstance(original, nn.Parameter):
        module.register_parameter("weight", original)
    else:
        module.register_buffer("weight", original)


def remove_fake_quant(model: nn.Module, bake: bool = True) -> None:
    """Remove every BCQFakeQuant parametrization.  ``bake=True`` writes the quantized values (what the
    next forward would have used) into the plain parameters; ``bake=False`` restores the latent fp32
    weights.  Tied weights stay one Parameter; latent weights require grad again."""
    for _, mods, p, w in _distinct(model).values():
        with torch.no_grad():
            q = p.quantized(w).detach().clone() if bake else None
        for m in mods:
            _unparametrize_weight(m)
        with torch.no_grad():
            if q is not None:
                w.copy_(q)
        w.requires_grad_(True)


def export_bcq(model: nn.Module, assignment: Mapping[str, Any] | None = None, group_size: int | None = None,
               method: str = "alternating", offset: bool = False, iters: int = 15,
               alpha_dtype: str = "float32") -> dict[str, bcq.BCQResult]:
    """Final per-matrix BCQ results ``{weight name: BCQResult}`` for packing (ondevice.bitplane /
    BCQMatrix.from_result).  Fake-quantized weights export their current state (re-quantized
    first where a refresh is due), so the results dequantize to exactly what the model computes;
    weights in ``assignment`` without fake quantization are quantized here with the given options."""
    out: dict[str, bcq.BCQResult] = {}
    for name, _, p, w in _distinct(model).values():
        out[name] = p.result(w)
    if assignment:
        for name, w, _, bits in _resolve(model, assignment):
            if name not in out:
                out[name] = bcq_quantize_result(w, bits, group_size, method, offset, iters, alpha_dtype)
    if not out:
        raise ConfigError("nothing to export: the model has no fake quantization and no assignment was given")
    return out
