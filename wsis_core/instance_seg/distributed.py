"""Multi-device IS training: torch's DistributedDataParallel, one process per device (``devices`` in the profile,
``--devices N`` on the command line).

:func:`train_distributed` spawns ``devices`` processes (``torch.multiprocessing``, start method ``spawn``); each
joins a process group (NCCL on GPUs, one GPU per process; gloo on the CPU), wraps its copy of the model in
``DistributedDataParallel`` and runs the single-device loop (:func:`~wsis_core.instance_seg.engine.train_instance_segmentation`)
on its shard of the training images (image ids ``rank::devices``, each shard cut to the smallest one's size, as
``DistributedSampler`` makes shards equal). Each step is one per-device batch per process, so the global batch is
``devices x is_batch_size`` images and an epoch has the iterations of a single-device epoch at that batch;
gradients are averaged across processes, so the weights stay identical everywhere. Batch norm layers that train
(a backbone from random weights) see the global batch on GPUs (``SyncBatchNorm``) and their own process's batch on
the CPU (gloo has no SyncBatchNorm); a backbone loaded from weights has frozen batch norm either way. Rank 0 hands the trained
weights back to the caller's model, so the checkpoint is written exactly as after single-device training. Progress
reaches the caller's ``on_progress`` in the calling process (which can so stop the training: it raises, the
processes are terminated). The returned history is the per-iteration mean over the processes (the global
batch's loss).
"""

from __future__ import annotations

import os
import queue
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from wsis_core.errors import WsisInputError
from wsis_core.progress import Progress

POLL_S = 0.2


def shard_annotations(annotations: Sequence[dict], rank: int, world: int) -> tuple[list[dict], int]:
    """The annotations of rank ``rank``'s images (image ids with annotations, sorted, ``rank::world``) and the
    number of images every shard is cut to (the smallest shard's size)."""
    ids = sorted({int(ann["image_id"]) for ann in annotations})
    if len(ids) < world:
        raise WsisInputError(f"{len(ids)} annotated image(s) cannot be shared by {world} devices")
    mine = set(ids[rank::world])
    return [ann for ann in annotations if int(ann["image_id"]) in mine], len(ids) // world


def process_devices(device: torch.device, devices: int) -> list[torch.device]:
    """The device of each process: ``cuda:0 .. cuda:N-1`` for a CUDA device (all of this machine's GPUs needed),
    the CPU N times otherwise."""
    if device.type != "cuda":
        return [torch.device("cpu")] * devices
    if devices > torch.cuda.device_count():
        raise WsisInputError(f"devices={devices}, but this machine has {torch.cuda.device_count()} GPU(s)")
    return [torch.device("cuda", index) for index in range(devices)]


def train_distributed(model, dataset, annotations: Sequence[dict], *, devices: int, device: torch.device,
                      on_progress: Progress = None, **options) -> dict[str, list[float]]:
    """:func:`train_instance_segmentation` on ``devices`` processes under DDP (``options``: its keyword
    arguments, ``batch_size`` per device); ``model`` ends with the trained weights, on ``device``, in eval mode."""
    from wsis_core.instance_seg.engine import train_instance_segmentation

    if devices == 1:
        return train_instance_segmentation(model, dataset, annotations, device=device, on_progress=on_progress,
                                           **options)
    targets = process_devices(device, devices)
    context = mp.get_context("spawn")
    progress = context.Queue()
    with tempfile.TemporaryDirectory(prefix="wsis-ddp-") as folder:
        spawned = mp.start_processes(
            _rank_main, args=(devices, _free_port(), model.cpu(), dataset, list(annotations), targets, options,
                              progress, Path(folder)),
            nprocs=devices, join=False, start_method="spawn")
        try:
            while not spawned.join(timeout=POLL_S):
                _drain(progress, on_progress)
        except BaseException:
            for process in spawned.processes:
                if process.is_alive():
                    process.terminate()
            raise
        _drain(progress, on_progress)
        model.load_state_dict(torch.load(Path(folder) / "model.pt", weights_only=True))
        histories = [torch.load(Path(folder) / f"history_{rank}.pt", weights_only=True) for rank in range(devices)]
    model.to(device).eval()
    return {name: [sum(values) / devices for values in zip(*(h[name] for h in histories))] for name in histories[0]}


def _drain(progress, on_progress: Progress) -> None:
    while True:
        try:
            done, total = progress.get_nowait()
        except queue.Empty:
            return
        if on_progress is not None:
            on_progress(done, total)


def _rank_main(rank: int, world: int, port: int, model, dataset, annotations: list[dict],
               targets: list[torch.device], options: dict, progress, folder: Path) -> None:
    """One process: join the group, train its shard under DDP, rank 0 saves the weights; every rank its history."""
    from wsis_core.instance_seg.engine import train_instance_segmentation

    device = targets[rank]
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:  # the CPU's cores are shared by the processes
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)) // world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        shard, images = shard_annotations(annotations, rank, world)
        epoch_images = options.pop("epoch_images", None)
        per_rank = images if epoch_images is None else max(1, min(images, epoch_images // world))
        if device.type == "cuda":  # batch statistics over the global batch (same parameters and buffers, same file)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        wrapped = DistributedDataParallel(model.to(device), device_ids=[device.index] if device.type == "cuda" else None)
        report = (lambda done, total: progress.put((done, total))) if rank == 0 else None
        history = train_instance_segmentation(
            wrapped, dataset, shard, device=device, epoch_images=per_rank, on_progress=report,
            **{**options, "seed": options.get("seed", 0) + rank})
        if rank == 0:
            torch.save(model.state_dict(), folder / "model.pt")
        torch.save(history, folder / f"history_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
