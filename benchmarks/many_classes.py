"""Cost of many classes: env build and one env step for C classes (6 train images each, 8x8 grey, augment source).

    python -m benchmarks.many_classes 50 200 800     # the numbers behind tailmix.pipeline.class_count_check
"""
import sys
import time

import numpy as np
import torch

from tailmix.envs.datasets import from_arrays
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv


def main(counts: list[int]) -> None:
    torch.set_num_threads(1)
    for c in counts:
        rng = np.random.default_rng(0)
        y = np.repeat(np.arange(c), 6)
        x = rng.integers(0, 256, (len(y), 8, 8), dtype=np.uint8)
        yv = np.repeat(np.arange(c), 2)
        xv = rng.integers(0, 256, (len(yv), 8, 8), dtype=np.uint8)
        ds = from_arrays(x, y, xv, yv, xv, yv)
        t0 = time.time()
        env = SyntheticRatioEnv(dataset=ds, source="augment", max_steps=2, cache_dir=False, encoder_epochs=5,
                                encoder_folds=3)
        env.reset(seed=0)
        t1 = time.time()
        env.step({a: np.ones(1) for a in env.agents})
        t2 = time.time()
        print(f"C={c} images={len(y)} build+reset {t1 - t0:.1f} s, one step {t2 - t1:.2f} s", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [50, 200])
