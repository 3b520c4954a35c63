"""Train the demo's robust starting networks and write them into the package (robust_prune/assets/), so that every
machine loads the same weights: `python tools/make_demo_model.py` trains all of them, `--only 8:0` one (size:seed).
The default settings at 8x8 (seed 0) are the demo network; the input-size tutorial
(`nbs/tutorials/paper/03_input_size.ipynb`) also loads 16x16 (seed 0) and a second 8x8 training (seed 1).
Run it when `robust_digits_model` or `digits_resnet` changes, then re-run the tutorials (`python tools/run_tutorials.py --save`)."""
import argparse
import time

import torch

from robust_prune.finetune import demo_settings, robust_digits_model, shipped_dir
from robust_prune.models import save_checkpoint


SHIPPED = ("8:0", "16:0", "8:1")  # size:seed of the shipped networks; all other settings are the defaults


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=list(SHIPPED), choices=SHIPPED, help="size:seed of the networks to train (default: all)")
    for which in ap.parse_args().only:
        size, seed = map(int, which.split(":"))
        settings, name = demo_settings(size=size, seed=seed)
        t0 = time.time()
        model = robust_digits_model(cache=False, size=size, seed=seed)
        path = save_checkpoint(model, shipped_dir() / name, settings=settings, threads=torch.get_num_threads())
        print(f"{size}x{size}, seed {seed}: trained in {time.time() - t0:.0f} s on {torch.get_num_threads()} thread(s); "
              f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
