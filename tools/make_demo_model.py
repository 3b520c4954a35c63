"""Train the demo's robust starting network with the default settings and write it into the package
(robust_prune/assets/), so that every machine loads the same weights: `python tools/make_demo_model.py`.
Run it when `robust_digits_model` or `digits_resnet` changes, then re-run the tutorials (`python tools/run_tutorials.py --save`)."""
import inspect
import time

import torch

from robust_prune.finetune import _demo_settings, robust_digits_model, shipped_dir
from robust_prune.models import save_checkpoint


def main():
    defaults = {k: p.default for k, p in inspect.signature(robust_digits_model).parameters.items()
                if k in ("eps", "epochs", "width", "size", "method", "seed")}
    settings, name = _demo_settings(**defaults)
    t0 = time.time()
    model = robust_digits_model(cache=False, **defaults)
    path = save_checkpoint(model, shipped_dir() / name, settings=settings, threads=torch.get_num_threads())
    print(f"trained in {time.time() - t0:.0f} s on {torch.get_num_threads()} thread(s); wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
