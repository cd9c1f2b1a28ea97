"""Center-context-gap refinement (CCGR) of boxes on class score maps.

Paper: "Center-context-gap Refinement for Weakly Supervised Instance Segmentation" (AAAI 2020),
section "Center-context-gap refinement" (Eq. 2, Eq. 3, Fig. 3-5).

A box B = (x1, y1, x2, y2) on a score map S is moved by gradient descent so that the mean score
inside it, Phi(B) (Eq. 2), is high while the mean score of its context C = B~ - B is low, where
B~ is the box with the same centre and ``context_scale`` (1.5 in the paper) times B's width and
height. The loss of one box is Eq. 3, L = Phi(C) - Phi(B).

Coordinates are continuous map pixels: pixel (i, j) covers [j, j+1) x [i, i+1), so a box lies in
[0, W] x [0, H]. Phi is read from a zero-padded summed-area table sampled bilinearly at the
(fractional) box corners. Bilinear sampling of the table is exactly the integral of Eq. 2 for the
piecewise-constant map (a pixel partly covered by the box counts with its covered area), so Phi is
exact everywhere, continuous and piecewise smooth in the coordinates, and differentiable almost
everywhere (kinks only at integer coordinates).

The gradient comes from where the score changes under the box's or the context's border: a box
whose context lies entirely on a flat plateau of the map has an exactly zero gradient and stays.

All boxes of all maps are refined in one batched computation; the only Python loop is over the
optimisation iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wsis_core.choices import GAP_MODES, MOVE_MODES

# Move modes (wsis_core.choices.MOVE_MODES): "free": every side moves either way (the paper); "outward": a side
# only moves away from the box's centre, so a box only grows from its starting box (a box on a discriminative
# part grows to the object, never shrinks onto the part when S itself is strongest there).
MIN_BOX_SIZE = 2.0  # px; boxes are kept at least this wide and high
DEFAULT_LR_FRACTION = 0.01  # default Adam step size: 1 % of max(H, W) px per iteration
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-6  # gradients of Phi are O(contrast / box side) >> 1e-6; float noise is << 1e-6
RING_AREA_EPS = 1e-6  # px^2, guards Phi(C) when the context box is clipped down to B itself


@dataclass(frozen=True)
class CCGRResult:
    """Outcome of :func:`ccgr_refine_with_trace`.

    boxes: refined boxes [K, 4] (x1, y1, x2, y2), on the input boxes' device, in the score maps' dtype.
    loss_per_iter: [iters] total loss sum_k (Phi(C_k) - Phi(B_k)) of the boxes at the start of
        each iteration (Eq. 3 summed over boxes).
    gap_per_box: [K] final centre-context gap Phi(B_k) - Phi(C_k) (minus the per-box Eq. 3 loss).
    stopped: [K] bool, True for boxes frozen by the peak rule (an update would have made the box
        contain more than one peak of its map, or the initial box already did).
    """

    boxes: torch.Tensor
    loss_per_iter: torch.Tensor
    gap_per_box: torch.Tensor
    stopped: torch.Tensor


def integral_image(score_maps: torch.Tensor) -> torch.Tensor:
    """Zero-padded summed-area table [M, H+1, W+1] in float64: sat[m, i, j] = sum of score_maps[m, :i, :j]."""
    sat = score_maps.to(torch.float64).cumsum(dim=1).cumsum(dim=2)
    return torch.nn.functional.pad(sat, (1, 0, 1, 0))


def sample_integral(sat: torch.Tensor, map_idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of the summed-area table at continuous points (x, y) in [0, W] x [0, H].

    ``map_idx``, ``x`` and ``y`` broadcast to one shape; one flat gather (``index_select``, ~10x
    faster than advanced indexing on CPU) over the [M, H+1, W+1] table serves every point of every
    map. Differentiable in x and y.
    """
    _, rows, cols = sat.shape
    map_idx, x, y = torch.broadcast_tensors(map_idx, x, y)
    x0 = x.detach().floor().clamp(0, cols - 2)
    y0 = y.detach().floor().clamp(0, rows - 2)
    fx, fy = x - x0, y - y0
    base = (map_idx * (rows * cols) + (y0 * cols + x0).long()).reshape(-1)
    neighbours = torch.stack((base, base + 1, base + cols, base + cols + 1))
    i00, i01, i10, i11 = sat.reshape(-1).index_select(0, neighbours.reshape(-1)).view(4, *x.shape)
    return (i00 * (1 - fx) + i01 * fx) * (1 - fy) + (i10 * (1 - fx) + i11 * fx) * fy


def box_sum(sat: torch.Tensor, map_idx: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Integral of the score map over boxes [..., 4] (numerator of Eq. 2); map_idx has shape [...]."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    xs = torch.stack((x2, x1, x2, x1), dim=-1)
    ys = torch.stack((y2, y2, y1, y1), dim=-1)
    corners = sample_integral(sat, map_idx.unsqueeze(-1), xs, ys)
    return (corners * corners.new_tensor([1.0, -1.0, -1.0, 1.0])).sum(-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area A_B of boxes [..., 4]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def context_box(boxes: torch.Tensor, scale: float, height: int, width: int) -> torch.Tensor:
    """B~: same centre as B, ``scale`` times its width and height, clipped to [0, W] x [0, H]."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = scale * (x2 - x1) / 2, scale * (y2 - y1) / 2
    return torch.stack(
        (
            (cx - half_w).clamp(0, width),
            (cy - half_h).clamp(0, height),
            (cx + half_w).clamp(0, width),
            (cy + half_h).clamp(0, height),
        ),
        dim=-1,
    )


def ccgr_loss(
    sat: torch.Tensor, boxes: torch.Tensor, map_idx: torch.Tensor, context_scale: float = 1.5, gap: str = "ring"
) -> torch.Tensor:
    """Per-box CCGR loss of Eq. 3, L_k = Phi(C_k) - Phi(B_k), shape [K].

    Phi(B) is Eq. 2. The context mean Phi(C) depends on ``gap``:

    - ``"ring"``: mean score over the ring C = B~ - B as the paper's text defines C,
      Phi(C) = (sum_B~ - sum_B) / max(A_B~ - A_B, eps); the epsilon only guards the empty ring (B~
      clipped down to B when B covers the whole map) and does not bias non-empty rings.
    - ``"paper"``: Eq. 3 as printed, Phi(C) = Phi(B~) - Phi(B), so L = Phi(B~) - 2 Phi(B). For an
      unclipped context Phi(B~) = Phi(B) / s^2 + (1 - 1/s^2) Phi(ring), so L = -(2 - 1/s^2) Phi(B)
      + (1 - 1/s^2) Phi(ring) = -1.56 Phi(B) + 0.56 Phi(ring) at s = 1.5: the context weighs only
      0.36 of the centre. It converges to objects of flat score, but where scores fall from an
      object's core to its border boxes shrink onto the core (the "small boxes" failure the paper's
      text warns about); see tests/test_ccgr.py.
    """
    if gap not in GAP_MODES:
        raise ValueError(f"gap must be one of {GAP_MODES}, got {gap!r}")
    height, width = sat.shape[1] - 1, sat.shape[2] - 1
    both = torch.stack((boxes, context_box(boxes, context_scale, height, width)), dim=1)  # [K, 2, 4]
    sums = box_sum(sat, map_idx.unsqueeze(1), both)
    areas = box_area(both)
    phi_box = sums[:, 0] / areas[:, 0]
    if gap == "ring":
        phi_context = (sums[:, 1] - sums[:, 0]) / (areas[:, 1] - areas[:, 0]).clamp(min=RING_AREA_EPS)
    else:
        phi_context = sums[:, 1] / areas[:, 1] - phi_box
    return phi_context - phi_box


def project_boxes(boxes: torch.Tensor, height: int, width: int, min_size: float = MIN_BOX_SIZE) -> torch.Tensor:
    """Make boxes valid: inside [0, W] x [0, H], x1 < x2 and y1 < y2 with sides >= ``min_size``.

    A side shorter than ``min_size`` is widened symmetrically about its centre (the centre is
    moved inwards first when it is too close to the border).
    """
    limit = boxes.new_tensor([width, height])
    lo = boxes[:, :2].clamp(min=0)
    hi = torch.minimum(boxes[:, 2:], limit)
    centre = torch.minimum(((lo + hi) / 2).clamp(min=min_size / 2), limit - min_size / 2)
    half = ((hi - lo) / 2).clamp(min=min_size / 2)
    return torch.cat((centre - half, centre + half), dim=1)


def peaks_per_box(
    peaks: torch.Tensor, peak_map_idx: torch.Tensor, map_idx: torch.Tensor, num_maps: int
) -> torch.Tensor:
    """Peaks of each box's map, [K, P_max, 2], padded with NaN (a NaN peak is inside no box).

    Peaks are grouped by map without a loop: sort by map, rank within the map, scatter into a
    [M, P_max, 2] table, then gather each box's row.
    """
    counts = torch.bincount(peak_map_idx, minlength=num_maps)
    p_max = int(counts.max()) if peak_map_idx.numel() else 0
    order = torch.argsort(peak_map_idx, stable=True)
    sorted_maps = peak_map_idx[order]
    starts = counts.cumsum(0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts[sorted_maps]
    table = peaks.new_full((num_maps, p_max, 2), float("nan"))
    table[sorted_maps, rank] = peaks[order]
    return table[map_idx]


def count_peaks(boxes: torch.Tensor, box_peaks: torch.Tensor) -> torch.Tensor:
    """Number of peaks [K] inside each (closed) box; box_peaks is [K, P_max, 2] from :func:`peaks_per_box`."""
    px, py = box_peaks[..., 0], box_peaks[..., 1]
    inside = (
        (px >= boxes[:, 0:1]) & (px <= boxes[:, 2:3]) & (py >= boxes[:, 1:2]) & (py <= boxes[:, 3:4])
    )
    return inside.sum(dim=1)


def default_lr(height: int, width: int) -> float:
    """Default Adam step size in pixels per iteration: ``DEFAULT_LR_FRACTION`` * max(H, W)."""
    return DEFAULT_LR_FRACTION * max(height, width)


def adam_step(grad: torch.Tensor, state: dict, step: int, lr: float) -> torch.Tensor:
    """One Adam update (Kingma & Ba) of all coordinates at once; updates ``state`` in place."""
    beta1, beta2 = ADAM_BETAS
    state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
    state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = state["m"] / (1 - beta1**step)
    v_hat = state["v"] / (1 - beta2**step)
    return lr * m_hat / (v_hat.sqrt() + ADAM_EPS)


def cosine_lr(lr: float, step: int, iters: int) -> float:
    """Cosine-annealed step size for iteration ``step`` (0-based): lr at the start, ~0 at the end."""
    return lr * 0.5 * (1 + math.cos(math.pi * step / iters))


def _validate(score_maps, boxes, map_idx, peaks, peak_map_idx, iters, lr, context_scale, gap, moves) -> None:
    if not isinstance(score_maps, torch.Tensor) or score_maps.dim() != 3:
        raise ValueError(f"score_maps must be a tensor [M, H, W], got shape {_shape(score_maps)}")
    if not score_maps.is_floating_point():
        raise ValueError(f"score_maps must be floating point, got {score_maps.dtype}")
    num_maps, height, width = score_maps.shape
    if num_maps == 0 or height < MIN_BOX_SIZE or width < MIN_BOX_SIZE:
        raise ValueError(
            f"score_maps must hold >= 1 map of at least {MIN_BOX_SIZE:g}x{MIN_BOX_SIZE:g} px, "
            f"got {tuple(score_maps.shape)}"
        )
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a tensor [K, 4] (x1, y1, x2, y2), got shape {_shape(boxes)}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes contain NaN or infinite coordinates")
    if bool(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()):
        raise ValueError("boxes must satisfy x1 < x2 and y1 < y2")
    _validate_index("map_idx", map_idx, boxes.shape[0], num_maps)
    if (peaks is None) != (peak_map_idx is None):
        raise ValueError("peaks and peak_map_idx must be given together")
    if peaks is not None:
        if not isinstance(peaks, torch.Tensor) or peaks.dim() != 2 or peaks.shape[1] != 2:
            raise ValueError(f"peaks must be a tensor [P, 2] (x, y), got shape {_shape(peaks)}")
        _validate_index("peak_map_idx", peak_map_idx, peaks.shape[0], num_maps)
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative int, got {iters!r}")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be positive or None, got {lr!r}")
    if not context_scale > 1:
        raise ValueError(f"context_scale must be > 1 (the context must be larger than the box), got {context_scale!r}")
    if gap not in GAP_MODES:
        raise ValueError(f"gap must be one of {GAP_MODES}, got {gap!r}")
    if moves not in MOVE_MODES:
        raise ValueError(f"moves must be one of {MOVE_MODES}, got {moves!r}")


def outward_only(candidate: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``candidate`` boxes with every side at least as far out as in ``start`` (x1, y1 no larger; x2, y2 no
    smaller): the "outward" move mode."""
    return torch.cat((torch.minimum(candidate[:, :2], start[:, :2]), torch.maximum(candidate[:, 2:], start[:, 2:])), 1)


def _validate_index(name: str, index, length: int, num_maps: int) -> None:
    if not isinstance(index, torch.Tensor) or index.dtype != torch.long or index.shape != (length,):
        raise ValueError(
            f"{name} must be a LongTensor [{length}], got {getattr(index, 'dtype', type(index))} {_shape(index)}"
        )
    if length and (int(index.min()) < 0 or int(index.max()) >= num_maps):
        raise ValueError(
            f"{name} values must be in [0, {num_maps - 1}], got range [{int(index.min())}, {int(index.max())}]"
        )


def _shape(value) -> tuple:
    return tuple(getattr(value, "shape", ()))


def ccgr_refine_with_trace(
    score_maps: torch.Tensor,
    boxes: torch.Tensor,
    map_idx: torch.Tensor,
    *,
    peaks: torch.Tensor | None = None,
    peak_map_idx: torch.Tensor | None = None,
    iters: int = 200,
    lr: float | None = None,
    context_scale: float = 1.5,
    gap: str = "ring",
    moves: str = "free",
) -> CCGRResult:
    """Refine boxes by minimising sum_k of the CCGR loss of Eq. 3 and return the trace.

    Optimiser: Adam on all 4K coordinates, step size ``lr`` px per iteration (default
    :func:`default_lr`, 1 % of max(H, W)) annealed by a cosine schedule to ~0 at the last
    iteration. Adam makes the step independent of the box size (the gradient of Phi shrinks as
    1 / box side); the annealing lets the boxes settle on the optimum instead of oscillating by
    +-lr around it. After each step boxes are projected back to valid boxes (:func:`project_boxes`).

    Peak rule (paper, ablation): if ``peaks`` are given, a box whose update would make it contain
    more than one peak of its map keeps its last coordinates and is frozen for the remaining
    iterations; a box that already contains more than one peak at the start is frozen from the
    start. Containment is tested on the closed box, x1 <= x <= x2 and y1 <= y <= y2.

    ``moves="outward"`` keeps every side at least as far out as in the (projected) input box after each step
    (:func:`outward_only`): the loss is Eq. 3 unchanged, minimised over boxes that contain the input box.

    Input boxes are first projected to valid boxes (clipped to the map, sides >= MIN_BOX_SIZE).
    Computation runs on ``score_maps``' device in float64 (the table and the coordinates): box sums
    are differences of large table entries, and in float32 their rounding noise (~1e-7 on the
    gradient of a 64x64 map, more on larger maps) replaces the exact zero gradient where the map is
    flat; Adam would turn that noise into full-size random steps. Results are cast back to the
    score maps' dtype and come back on the boxes' device.
    """
    _validate(score_maps, boxes, map_idx, peaks, peak_map_idx, iters, lr, context_scale, gap, moves)
    num_maps, height, width = score_maps.shape
    device, dtype = score_maps.device, score_maps.dtype
    step_size = default_lr(height, width) if lr is None else float(lr)

    sat = integral_image(score_maps.detach())
    idx = map_idx.to(device)
    current = project_boxes(boxes.detach().to(device, torch.float64), height, width)
    start = current
    box_peaks = None
    stopped = torch.zeros(current.shape[0], dtype=torch.bool, device=device)
    if peaks is not None:
        box_peaks = peaks_per_box(peaks.to(device, torch.float64), peak_map_idx.to(device), idx, num_maps)
        stopped = count_peaks(current, box_peaks) > 1

    losses = torch.zeros(iters, dtype=torch.float64, device=device)
    state = {"m": torch.zeros_like(current), "v": torch.zeros_like(current)}
    for step in range(iters):
        params = current.clone().requires_grad_(True)
        total = ccgr_loss(sat, params, idx, context_scale, gap).sum()
        (grad,) = torch.autograd.grad(total, params)
        losses[step] = total.detach()  # no .item(): no device sync inside the loop
        with torch.no_grad():
            update = adam_step(grad, state, step + 1, cosine_lr(step_size, step, iters))
            candidate = project_boxes(current - update, height, width)
            if moves == "outward":
                candidate = outward_only(candidate, start)
            if box_peaks is not None:
                stopped |= count_peaks(candidate, box_peaks) > 1
            current = torch.where(stopped.unsqueeze(1), current, candidate)

    with torch.no_grad():
        gap_per_box = -ccgr_loss(sat, current, idx, context_scale, gap)
    out = boxes.device
    return CCGRResult(current.to(out, dtype), losses.to(out, dtype), gap_per_box.to(out, dtype), stopped.to(out))


def ccgr_refine(
    score_maps: torch.Tensor,
    boxes: torch.Tensor,
    map_idx: torch.Tensor,
    *,
    peaks: torch.Tensor | None = None,
    peak_map_idx: torch.Tensor | None = None,
    iters: int = 200,
    lr: float | None = None,
    context_scale: float = 1.5,
    gap: str = "ring",
    moves: str = "free",
) -> torch.Tensor:
    """Refined boxes [K, 4] by CCGR (Eq. 2, Eq. 3); see :func:`ccgr_refine_with_trace` for details.

    score_maps: [M, H, W] class score maps in [0, 1]; boxes: [K, 4] (x1, y1, x2, y2) in map pixels;
    map_idx: [K] map of each box; peaks: [P, 2] (x, y) with peak_map_idx [P] enable the peak stop
    rule; lr: Adam step in px per iteration (None: 1 % of max(H, W)); gap: "ring" (mean over
    C = B~ - B) or "paper" (Phi(C) = Phi(B~) - Phi(B) as printed in the paper); moves: "free" (the paper) or
    "outward" (boxes only grow from the input boxes).
    """
    return ccgr_refine_with_trace(
        score_maps,
        boxes,
        map_idx,
        peaks=peaks,
        peak_map_idx=peak_map_idx,
        iters=iters,
        lr=lr,
        context_scale=context_scale,
        gap=gap,
        moves=moves,
    ).boxes
