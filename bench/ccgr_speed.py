"""Speed of batched CCGR (wsis_core.ccgr.ccgr_refine) against a per-box Python loop of the same algorithm.

Workload (defaults): 2,000 boxes over 100 synthetic 160x160 score maps, 200 iterations, one peak per
object. The loop baseline refines each box alone (one ccgr_refine call per box on its own map and
peaks, i.e. a Python loop over boxes around the loop over iterations); it is timed on a subset of
``--loop-boxes`` boxes and its boxes/s extrapolated to the full set.

    PYTHONPATH=. python bench/ccgr_speed.py --device auto
"""

from __future__ import annotations

import argparse
import time

import torch

from wsis_core.ccgr import ccgr_refine


def synthetic_workload(num_maps: int, num_boxes: int, size: int, seed: int):
    """Maps with one graded object each (plus background noise) and boxes on parts of the objects.

    Two peaks per map: the object's centre and a point just right of the object, so that boxes growing
    past the object are frozen by the peak rule.
    """
    gen = torch.Generator().manual_seed(seed)
    side = torch.randint(size // 8, size // 2, (num_maps, 2), generator=gen).float()
    corner = torch.rand(num_maps, 2, generator=gen) * (size - side)
    centre = corner + side / 2
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = (coords[None, None, :] - centre[:, 0, None, None]) / (side[:, 0, None, None] / 2)
    dy = (coords[None, :, None] - centre[:, 1, None, None]) / (side[:, 1, None, None] / 2)
    inside = (dx.abs() <= 1) & (dy.abs() <= 1)
    background = 0.1 * torch.rand(num_maps, size, size, generator=gen)
    maps = torch.where(inside, 1 - 0.4 * (dx**2 + dy**2).clamp(max=1), background)

    map_idx = torch.arange(num_boxes) % num_maps
    box_side = side[map_idx] * (0.3 + 0.5 * torch.rand(num_boxes, 2, generator=gen))
    box_centre = centre[map_idx] + 0.15 * side[map_idx] * torch.randn(num_boxes, 2, generator=gen)
    boxes = torch.cat((box_centre - box_side / 2, box_centre + box_side / 2), dim=1).clamp(0, size)
    outside = (corner + side * torch.tensor([1.1, 0.5])).clamp(max=size - 1)
    return maps, boxes, map_idx, torch.cat((centre, outside)), torch.arange(num_maps).repeat(2)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--boxes", type=int, default=2000)
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--loop-boxes", type=int, default=50, help="boxes timed in the per-box loop (extrapolated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)

    maps, boxes, map_idx, peaks, peak_map_idx = (
        t.to(device) for t in synthetic_workload(args.maps, args.boxes, args.size, args.seed)
    )
    ccgr_refine(maps, boxes[:8], map_idx[:8], peaks=peaks, peak_map_idx=peak_map_idx, iters=5)  # warm-up

    batched, t_batched = timed(
        lambda: ccgr_refine(maps, boxes, map_idx, peaks=peaks, peak_map_idx=peak_map_idx, iters=args.iters), device
    )

    subset = min(args.loop_boxes, args.boxes)
    one = torch.zeros(1, dtype=torch.long, device=device)  # map index of a box refined alone

    def per_box_loop():
        out = []
        for k in range(subset):
            m = int(map_idx[k])
            map_m, box_k, peaks_m = maps[m : m + 1], boxes[k : k + 1], peaks[peak_map_idx == m]
            zeros = torch.zeros(len(peaks_m), dtype=torch.long, device=device)
            out.append(ccgr_refine(map_m, box_k, one, peaks=peaks_m, peak_map_idx=zeros, iters=args.iters))
        return torch.cat(out)

    looped, t_loop = timed(per_box_loop, device)
    max_diff = float((looped - batched[:subset]).abs().max())

    batched_rate = args.boxes / t_batched
    loop_rate = subset / t_loop
    threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
    workload = f"{args.boxes} boxes over {args.maps} maps of {args.size}x{args.size}, {args.iters} iterations"
    print(f"device: {device}{threads}; {workload}")
    print(f"batched ccgr_refine : {batched_rate:10.1f} boxes/s  ({t_batched:.3f} s for {args.boxes} boxes)")
    print(
        f"per-box Python loop: {loop_rate:10.1f} boxes/s  ({t_loop:.3f} s for {subset} boxes, "
        f"extrapolated to {args.boxes}: {args.boxes / loop_rate:.1f} s)"
    )
    print(f"speed-up: {batched_rate / loop_rate:.0f}x   (max |batched - loop| on the timed subset: {max_diff:.2e} px)")


if __name__ == "__main__":
    main()
