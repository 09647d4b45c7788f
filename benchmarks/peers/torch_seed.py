"""The seed network and training in plain PyTorch: a peer for benchmarks/train_speed.py (--torch).

Conv2d(1,32,3,same)-ReLU-MaxPool-Conv2d(32,64,3,same)-ReLU-MaxPool-Flatten-Linear(3136,100)-ReLU-Dropout(0.4)
-Linear(100,10), Adam 1e-3, batch 32, cross-entropy; the same 80/20 split of MNIST's training set.
torch is not a cnnlab dependency: `pip install torch` (a CPU wheel) to run this. On a machine with CUDA it runs there,
the whole data set on the GPU.

    python benchmarks/peers/torch_seed.py --data-dir ../shared/datasets/mnist --epochs 1 --timing t.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seed_script import load_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[3] / "shared/datasets/mnist"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timing", metavar="JSON")
    args = parser.parse_args(argv)
    from sklearn.model_selection import train_test_split

    torch.manual_seed(42)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the data lives there, whole
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    (x, y), _ = load_data(args.data_dir)
    x = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    x_train, x_val, y_train, y_val = (t.to(device) for t in train_test_split(
        x, torch.from_numpy(y.astype(np.int64)), test_size=0.2, random_state=42))
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 100), nn.ReLU(), nn.Dropout(0.4), nn.Linear(100, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    epochs = []
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), device=device)
        steps = range(0, len(x_train), args.batch_size)
        for i, start in enumerate(steps):
            batch = order[start:start + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
            if i == 0:
                synchronize()
                first_done = time.perf_counter()
        synchronize()
        train_done = time.perf_counter()
        model.eval()
        with torch.inference_mode():
            val_accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
        epochs.append({"epoch": epoch, "seconds": time.perf_counter() - started, "train_seconds": train_done - started,
                       "steady_batches": len(steps) - 1, "steady_seconds": train_done - first_done,
                       "val_accuracy": val_accuracy})
        print(epochs[-1], flush=True)
    if args.timing:
        Path(args.timing).write_text(json.dumps({"peer": "plain PyTorch", "batch_size": args.batch_size,
                                                 "train_images": len(x_train), "epochs": epochs}, indent=2))


if __name__ == "__main__":
    main()
