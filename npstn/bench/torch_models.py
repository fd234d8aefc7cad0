"""The same networks in PyTorch: a like-for-like reference for the training benchmark.

:func:`to_torch` walks an npstn network (a :class:`~npstn.models.PaperModel`
or any tree of the layers below) and builds the PyTorch network with the same
layers, in the same order, with the same hyper-parameters, and a copy of
npstn's weights::

    npstn                               PyTorch
    Linear(i, o)                        torch.nn.Linear(i, o)
    Conv2d(c, o, k, stride, padding)    torch.nn.Conv2d(c, o, k, stride, padding)
    MaxPool2d / AvgPool2d               torch.nn.MaxPool2d / AvgPool2d (same k, stride,
                                        padding, ceil_mode, count_include_pad, divisor)
    ReLU, Flatten, Dropout, Sequential  their torch.nn namesakes
    SpatialTransformer                  :class:`TorchSpatialTransformer`: the converted
                                        localisation net, the grid (F.affine_grid for
                                        affine and attention, the TPS matrix of
                                        npstn.functional.tps_matrix for tps, the
                                        homography for projective), F.grid_sample
    PaperModel                          torch.nn.Sequential(ST, pool, classifier)

Anything else raises ``TypeError``: the comparison is only made where the two
networks are the same. :func:`check_equivalence` runs both on one batch and
compares the logits (and, for information, the loss and every parameter
gradient).

PyTorch is imported lazily, inside the functions: it is never a dependency
of npstn.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_torch", "check_equivalence", "sgd_param_groups"]


def _torch():
    import torch

    return torch


def _copy(tparam, array) -> None:
    torch = _torch()
    with torch.no_grad():
        tparam.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _make_st_class():
    torch = _torch()
    import torch.nn.functional as TF

    class TorchSpatialTransformer(torch.nn.Module):
        """localisation -> theta -> grid (by transform) -> F.grid_sample, as npstn's SpatialTransformer."""

        def __init__(self, localization, transform: str, num_params: int, output_size, mode,
                     padding_mode, align_corners, tps_points: int | None = None):
            super().__init__()
            self.localization = localization
            self.transform = transform
            self.num_params = num_params
            self.output_size = output_size
            self.mode, self.padding_mode, self.align_corners = mode, padding_mode, bool(align_corners)
            self.tps_points = tps_points
            self._tps_cache = {}

        def _size(self, x):
            n, c, h, w = x.shape
            ho, wo = self.output_size if self.output_size is not None else (h, w)
            return n, c, ho, wo

        def _tps_matrix(self, ho, wo, x):
            key = (ho, wo, x.device, x.dtype)
            if key not in self._tps_cache:
                from npstn.functional.tps import tps_matrix

                m = tps_matrix(self.tps_points, ho, wo, self.align_corners)
                self._tps_cache[key] = torch.tensor(np.array(m), dtype=x.dtype, device=x.device)
            return self._tps_cache[key]

        def grid(self, theta, size):
            n, c, ho, wo = size
            ac = self.align_corners
            if self.transform == "affine":
                return TF.affine_grid(theta.view(n, 2, 3), list(size), align_corners=ac)
            if self.transform == "attention":
                s, tx, ty = theta.unbind(1)
                z = torch.zeros_like(s)
                a = torch.stack([torch.stack([s, z, tx], 1), torch.stack([z, s, ty], 1)], 1)
                return TF.affine_grid(a, list(size), align_corners=ac)
            if self.transform == "tps":
                m = self._tps_matrix(ho, wo, theta)
                return torch.matmul(m, theta.view(n, -1, 2)).view(n, ho, wo, 2)
            if self.transform == "projective":
                one = torch.ones(n, 1, dtype=theta.dtype, device=theta.device)
                h = torch.cat([theta, one], 1).view(n, 3, 3)
                eye = torch.eye(2, 3, dtype=theta.dtype, device=theta.device).expand(n, 2, 3)
                base = TF.affine_grid(eye, list(size), align_corners=ac).view(n, -1, 2)
                pts = torch.cat([base, torch.ones_like(base[..., :1])], -1)  # (N, HW, 3)
                q = torch.matmul(pts, h.transpose(1, 2))
                return (q[..., :2] / q[..., 2:]).view(n, ho, wo, 2)
            raise TypeError(f"no PyTorch mirror for the {self.transform!r} transform")

        def forward(self, x):
            theta = self.localization(x)
            g = self.grid(theta, self._size(x))
            return TF.grid_sample(x, g, mode=self.mode, padding_mode=self.padding_mode,
                                  align_corners=self.align_corners)

    return TorchSpatialTransformer


def __getattr__(name):  # TorchSpatialTransformer, built on first use (torch imported lazily)
    if name == "TorchSpatialTransformer":
        return _make_st_class()
    raise AttributeError(name)


def to_torch(module, device: str = "cpu"):
    """``(torch_module, lr_mults)``: the PyTorch twin of an npstn network, with npstn's weights.

    ``lr_mults`` lists ``(torch_parameter, lr_mult)`` for every parameter, in
    npstn's parameter order (for :func:`sgd_param_groups`).
    """
    torch = _torch()
    pairs: list = []
    st_class = _make_st_class()
    tmod = _convert(module, pairs, torch, st_class)
    tmod = tmod.to(device)
    # .to() may replace the parameters: look them up again by identity of position
    tparams = list(tmod.parameters())
    if len(tparams) != len(pairs):
        raise AssertionError(f"to_torch: {len(tparams)} torch parameters for {len(pairs)} npstn ones")
    n_np = sum(int(np.prod(p.data.shape)) for p in module.parameters())
    n_t = sum(int(p.numel()) for p in tparams)
    if n_np != n_t:
        raise AssertionError(f"to_torch: the torch model has {n_t} parameters, npstn's {n_np}")
    return tmod, [(tp, mult) for tp, (_, mult) in zip(tparams, pairs)]


def _convert(m, pairs, torch, st_class):
    from npstn import nn
    from npstn.models import PaperModel
    from npstn.nn.module import Sequential
    from npstn.stn.spatial_transformer import SpatialTransformer

    tnn = torch.nn

    def params(tm, *names):
        for name in names:
            p = getattr(m, name, None)
            if p is None:
                continue
            _copy(getattr(tm, name), p.data)
            pairs.append((getattr(tm, name), p.lr_mult))
        return tm

    if isinstance(m, PaperModel):
        stages = [s for s in (m.transformer, m.downsample, m.classifier) if s is not None]
        return tnn.Sequential(*[_convert(s, pairs, torch, st_class) for s in stages])
    if isinstance(m, Sequential):
        return tnn.Sequential(*[_convert(s, pairs, torch, st_class) for s in m])
    if isinstance(m, SpatialTransformer):
        if m.return_theta:
            raise TypeError("to_torch: SpatialTransformer(return_theta=True) has no mirror")
        loc = _convert(m.localization, pairs, torch, st_class)
        t = m.transform
        tps_points = getattr(t, "num_control_points", None)
        return st_class(loc, t.name, t.num_params, m.output_size, m.mode, m.padding_mode,
                        m.align_corners, tps_points)
    if isinstance(m, nn.Linear):
        tm = tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        return params(tm, "weight", "bias")
    if isinstance(m, nn.Conv2d):
        tm = tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                        padding=m.padding, bias=m.bias is not None)
        return params(tm, "weight", "bias")
    if isinstance(m, nn.MaxPool2d):
        return tnn.MaxPool2d(m._k, m._s, m._p, ceil_mode=m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        return tnn.AvgPool2d(m._k, m._s, m._p, ceil_mode=m.ceil_mode,
                             count_include_pad=m.count_include_pad,
                             divisor_override=m.divisor_override)
    if isinstance(m, nn.ReLU):
        return tnn.ReLU()
    if isinstance(m, nn.Flatten):
        return tnn.Flatten(m.start_dim, m.end_dim)
    if isinstance(m, nn.Dropout):
        return tnn.Dropout(m.p)
    raise TypeError(f"to_torch: no PyTorch mirror for {type(m).__name__}")


def sgd_param_groups(lr_mults, lr: float) -> list[dict]:
    """torch.optim param groups that apply npstn's per-parameter ``lr_mult``."""
    groups: dict = {}
    for p, mult in lr_mults:
        groups.setdefault(float(mult), []).append(p)
    return [{"params": ps, "lr": lr * mult} for mult, ps in groups.items()]


def check_equivalence(model, tmodel, x, y, tol: float = 1e-4, grad_tol: float | None = 1e-3,
                      device: str = "cpu", check_loc_grads: bool = False) -> dict:
    """Run both networks on one batch, forward and backward; raise AssertionError if they differ.

    ``x`` float32 (N, C, H, W), ``y`` int (N,). The logits must agree to
    ``tol`` relative to max(1, max |logit|); every parameter's gradient (after
    one backward pass of each; npstn's are zeroed again afterwards) to
    ``grad_tol`` relative to that gradient's largest magnitude (None: report
    only).

    The localisation networks' gradients are only reported unless
    ``check_loc_grads``: at the identity transform, where an untrained ST
    starts, every sample point sits exactly on a pixel centre, a kink of
    bilinear sampling, and which side's sub-gradient a point gets depends on
    the last bit of its float32 coordinate, computed differently by the two
    libraries. With a perturbed regression layer they agree (tests check it).

    Returns ``{"logits_max_rel_err", "loss_abs_err", "grad_max_rel_err",
    "grad_worst_param", "loc_grad_max_rel_err"}`` (the gradient entries cover
    the parameters outside localisation networks, and inside them).
    """
    torch = _torch()
    import torch.nn.functional as TF

    from npstn import nn

    model.zero_grad()
    logits = model(x)
    loss_fn = nn.CrossEntropyLoss()
    loss = float(loss_fn(logits, y))
    model.backward(loss_fn.backward())

    tmodel.zero_grad(set_to_none=True)
    tx = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    ty = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    tlogits = tmodel(tx)
    tloss = TF.cross_entropy(tlogits, ty)
    tloss.backward()

    a = logits
    b = tlogits.detach().cpu().numpy()
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a - b).max()) / scale
    worst, worst_name, loc_worst = 0.0, None, 0.0
    for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
        g = tp.grad.detach().cpu().numpy() if tp.grad is not None else np.zeros(tp.shape, np.float32)
        s = max(float(np.abs(g).max()), 1e-12)
        e = float(np.abs(p.grad - g).max()) / s
        if ".localization." in f".{name}" and not check_loc_grads:
            loc_worst = max(loc_worst, e)
        elif e > worst:
            worst, worst_name = e, name
    model.zero_grad()
    tmodel.zero_grad(set_to_none=True)
    if not err <= tol:
        raise AssertionError(
            f"the PyTorch model's logits differ from npstn's (max relative error {err:.3g} > {tol:g}): "
            "the comparison would not be like for like")
    if grad_tol is not None and not worst <= grad_tol:
        raise AssertionError(
            f"the PyTorch model's gradient of {worst_name} differs from npstn's (max relative error "
            f"{worst:.3g} > {grad_tol:g}): the comparison would not be like for like")
    return {"logits_max_rel_err": err, "loss_abs_err": abs(loss - float(tloss.detach())),
            "grad_max_rel_err": worst, "grad_worst_param": worst_name,
            "loc_grad_max_rel_err": loc_worst}
