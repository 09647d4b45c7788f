"""Several devices and machines: data-parallel training through Keras's distribution API (JAX's SPMD), not a
home-made loop.

One program runs over a mesh of devices, the devices of one machine or of several processes: every variable is
replicated on each device, each global batch is split along its first axis, and XLA sums the gradients. So the
batch size is the global one (one device's steps see the same batches), and it must divide by the device count.

    with data_parallel("auto") as parallel:   # all local devices; "1" is today's single-device path, untouched
        model = build_model(config)          # variables created replicated on the mesh
        train(model, data, config, "runs/x")  # batches sharded; validation padded so that no image is lost

Several machines: `initialize(coordinator="10.0.0.1:1234", num_processes=2, process_id=K)` in each process before
anything touches JAX; then the mesh spans every process's devices, each process feeds its share of each batch
(`Parallel.local_rows`), and only process 0 writes the run directory (`private_folder`). keras.distribution is
JAX-only in Keras 3 (TensorFlow's tf.distribute would be a second, separate code path): other backends get a
one-line error.
"""

import contextlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .errors import ConfigError, first_line

CLUSTER_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "JAX_COORDINATOR_ADDRESS")
JAX_ONLY = "several devices or processes need the JAX backend (keras.distribution is JAX-only in Keras 3): " \
           "run with KERAS_BACKEND=jax (pip install 'cnnlab[jax]')"


@dataclass(frozen=True)
class Parallel:
    """Where a step runs: `devices` in all (a mesh across `processes`), this process being `process`."""
    devices: int = 1
    processes: int = 1
    process: int = 0

    def local_rows(self, rows):
        """This process's share of a global batch's rows: process k feeds the k-th slice, which its devices hold
        (the mesh lists the devices process by process)."""
        if self.processes == 1:
            return rows
        share = len(rows) // self.processes
        return rows[self.process * share:(self.process + 1) * share]

    def describe(self) -> dict:
        """What metrics.json records."""
        return {"devices": self.devices, "processes": self.processes}


SINGLE = Parallel()


def current() -> Parallel:
    """The Parallel of the distribution in effect (keras.distribution's), or SINGLE."""
    distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if distribution is None:
        return SINGLE
    import jax

    return Parallel(int(distribution.device_mesh.devices.size), jax.process_count(), jax.process_index())


def check_devices(devices: str):
    """A one-line error, before any data is read or folder made, for several devices on a backend without
    keras.distribution, or for more devices than there are."""
    if devices != "1" and keras.backend.backend() != "jax":
        raise ConfigError(f"devices={devices!r}: {JAX_ONLY}")
    if devices != "1":
        _mesh_devices(devices)


def initialize(coordinator=None, num_processes=None, process_id=None):
    """Join this process to a cluster of `num_processes` (keras.distribution.initialize, so Keras's
    KERAS_DISTRIBUTION_* variables work too, and JAX's JAX_COORDINATOR_ADDRESS with a SLURM or Open MPI launch that
    tells the rest); nothing when neither arguments nor variables ask for one. Call it first: JAX must not have
    started. On CPUs the processes exchange gradients over Gloo (JAX's CPU collectives).

        initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # on the first machine; process_id=1 on the other
    """
    asked = (coordinator, num_processes, process_id) != (None, None, None)
    if not (asked or any(map(os.environ.get, CLUSTER_VARIABLES))):
        return
    if keras.backend.backend() != "jax":
        raise ConfigError(f"coordinator=: {JAX_ONLY}")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"num_processes= must be at least 1, not {num_processes}")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"process_id= must be in 0..{num_processes - 1} (one per process), not {process_id}")
    if coordinator is not None and not _is_address(coordinator):
        raise ConfigError(f"coordinator= must be HOST:PORT (process 0's address, e.g. 10.0.0.1:1234), not "
                          f"{coordinator!r}")
    import jax

    # JAX 0.10's default; older releases had none, and a cross-process step on CPUs failed. GPUs use NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize(coordinator, num_processes, process_id)
    except (RuntimeError, ValueError) as e:  # JAX already started, or a mismatch of addresses and counts
        raise ConfigError(f"could not join the cluster at {coordinator}: {first_line(e)}") from None


def _is_address(text):
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _mesh_devices(devices: str):
    """The devices of the mesh: `devices` ("auto" or N) of each process's own, listed process by process."""
    import jax

    local = jax.local_devices()
    wanted = len(local) if devices == "auto" else int(devices)
    if wanted > len(local):
        raise ConfigError(f"devices={devices!r}: this process sees {len(local)} {local[0].platform.upper()} "
                          f"device{'s' * (len(local) != 1)}; use devices='auto' or at most {len(local)}")
    by_process = {}
    for device in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_process.setdefault(device.process_index, []).append(device)
    return [device for process in sorted(by_process) for device in by_process[process][:wanted]]


@contextlib.contextmanager
def data_parallel(devices: str = "1"):
    """Train under keras.distribution.DataParallel over `devices` ("auto": all local ones; N) of every process,
    yielding the Parallel. One device in one process is today's path: no distribution at all."""
    check_devices(devices)
    if devices == "1" and _process_count() == 1:
        yield SINGLE
        return
    mesh = _mesh_devices(devices)
    if len(mesh) == 1:
        yield SINGLE
        return
    # Each process feeds its own share of a batch (local_rows), so Keras must not shard the dataset again.
    with keras.distribution.DataParallel(devices=mesh, auto_shard_dataset=False).scope():
        yield current()


def _process_count():
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def global_batch(batch_size, parallel: Parallel) -> tuple[int, str | None]:
    """The batch size to train with, a multiple of the device count (the nearest, at least one per device), and
    the line that says so; no line on one device."""
    if parallel.devices == 1:
        return batch_size, None
    rounded = max(parallel.devices, parallel.devices * round(batch_size / parallel.devices))
    shown = f"{rounded} images per step across {parallel.devices} devices ({rounded // parallel.devices} per device)"
    if rounded != batch_size:
        return rounded, (f"Batch: the batch size {batch_size} is rounded to {rounded}, a multiple of the "
                         f"{parallel.devices} devices; {shown}; the batch size is the global batch")
    return rounded, f"Batch: {shown}; the batch size is the global batch"


def whole_rows(count, parallel: Parallel) -> int:
    """Training images used per epoch: the last batch is cut to a multiple of the device count (each device gets
    an equal share), which leaves out at most devices - 1 images, other ones every epoch (shuffled)."""
    return count - count % parallel.devices


class PaddedBatches(keras.utils.PyDataset):
    """Validation images, labels and weights in order, every batch a multiple of the device count: the last one is
    padded with copies labelled -1 (no class: a loss of 0, never right) and weighted 0, so that every image counts
    once and none is left out. Keras's means still divide by the padded count (its loss tracker weights a batch by
    its length, and `accuracy` is not a weighted metric): `PaddedMeansCorrection` undoes that, exactly."""

    def __init__(self, x, y, batch_size, parallel: Parallel):
        super().__init__()
        self.x, self.y, self.parallel = x, y, parallel
        self.batch_size = parallel.devices * math.ceil(batch_size / parallel.devices)
        self.padding = -len(y) % parallel.devices

    def __len__(self):
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x, y = np.asarray(self.x[rows]), np.asarray(self.y[rows], np.int32)  # signed: -1 marks the padding
        weights = np.ones(len(y), np.float32)
        if index == len(self) - 1 and self.padding:
            copies = np.arange(self.padding) % len(y)
            x, y = np.concatenate([x, x[copies]]), np.concatenate([y, np.full(self.padding, -1, y.dtype)])
            weights = np.concatenate([weights, np.zeros(self.padding, np.float32)])
        local = self.parallel.local_rows
        return local(x), local(y), local(weights)

    def means_correction(self):
        return PaddedMeansCorrection(len(self.y), self.padding)


class PaddedMeansCorrection(keras.callbacks.Callback):
    """Keras's validation loss and accuracy over PaddedBatches are sums over the images (the padding adds 0 to each)
    divided by the padded count: scaled back to means over the images, before early stopping and the history
    read them."""

    def __init__(self, images, padding):
        super().__init__()
        self.scale = (images + padding) / images

    def on_epoch_end(self, epoch, logs=None):
        for key in [key for key in logs or {} if key in ("val_loss", "val_accuracy")]:
            logs[key] = float(logs[key]) * self.scale


def predict(model, images, batch_size=256):
    """model.predict, also under a distribution on one process: images padded to a multiple of the device count
    (and the batch size rounded to one), the padding's predictions dropped, so no image is lost."""
    parallel = current()
    if parallel.devices == 1:
        return model.predict(images, batch_size=batch_size, verbose=0)
    if parallel.processes > 1:
        raise ConfigError("predicting under a distribution over several processes is not supported: score the "
                          "model outside it (cnnlab does: a run's test scores are computed on one device)")
    padding = -len(images) % parallel.devices
    padded = np.concatenate([images, images[np.arange(padding) % len(images)]]) if padding else images
    batch = parallel.devices * math.ceil(batch_size / parallel.devices)
    return model.predict(padded, batch_size=batch, verbose=0)[:len(images)]


def is_writer() -> bool:
    """Whether this process writes the run directory: process 0 (or the only one)."""
    if keras.backend.backend() != "jax":
        return True
    import jax

    return jax.process_index() == 0


@contextlib.contextmanager
def private_folder(path):
    """The run directory this process writes: `path` itself on process 0; for the other processes of a cluster, a
    temporary copy (they train the same steps and would write the same files), deleted at the end. A resumed run's
    directory must be readable by every process (a shared file system, or the same machine)."""
    if is_writer():
        yield Path(path)
        return
    import jax

    with tempfile.TemporaryDirectory(prefix=f"cnnlab-process-{jax.process_index()}-") as scratch:
        private = Path(scratch) / Path(path).name
        if Path(path).is_dir():
            shutil.copytree(path, private, ignore=shutil.ignore_patterns(".cnnlab-lock"))
        print(f"Process {jax.process_index()} of {jax.process_count()}: process 0 writes {path}; this one writes "
              f"nothing lasting")
        yield private
