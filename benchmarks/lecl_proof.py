"""LeCL proof on the CT phantom: attention-MIL on LeCL slice features vs plain MoCo v3 vs a random encoder.

The chain is :mod:`radlens.demo_lesions` (the same code as the demo's lesion stage) at a larger size:
a CT phantom with finding masks, 2D axial slices with per-slice lesion boxes, MoCo v3 and LeCL slice
encoders trained for the same CPU budget, a randomly initialised encoder, bags per study, and a gated
ABMIL head in patient-level 5-fold CV on the phantom's focal findings, scored on held-out test
patients (fold ensemble, patient-bootstrap 95% CIs), with the attention mass on lesion slices.

    python benchmarks/lecl_proof.py --out /tmp/lecl-proof --patients 120 --seconds 240

Every step resumes from what OUT already holds (``--endpoints large`` after a focal run reuses its encoders
and bags). Prints a markdown table and the paired differences between encoders on the same test patients
(:mod:`mil_paired`); OUT/lesions.json (or lesions-mil-large.json) has it all.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from mil_paired import paired_table

    from radlens.demo_lesions import ENDPOINTS, LARGE_ENDPOINTS, LesionChainSize, lesion_chain, lesion_table
    from radlens.phantoms.ct import phantom_ct

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lecl-proof"))
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--seconds", type=int, default=240, help="CPU budget of each self-supervised encoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val_every", type=int, default=50, help="validation interval of the encoders (steps)")
    parser.add_argument("--mil_steps", type=int, default=300, help="training steps of each MIL fold")
    parser.add_argument("--slice_px", type=int, default=64, help="square slice size in pixels")
    parser.add_argument("--slice_mm", type=float, default=5.0, help="in-plane pixel spacing (the phantom's is 3.5 mm)")
    parser.add_argument("--stem_stride", type=int, default=1, help="stride of the encoder's first convolution")
    parser.add_argument("--endpoints", choices=["focal", "large"], default="focal",
                        help="MIL labels: the four focal findings (LeCL's lesions) or four larger ones (into OUT/mil-large)")
    args = parser.parse_args()
    raw = args.out / "raw"
    if not raw.exists():
        phantom_ct(raw, patients=args.patients, seed=args.seed, workers=2)
    size = LesionChainSize(series=None, moco_seconds=args.seconds, moco_max_steps=100_000, mil_steps=args.mil_steps, folds=5,
                           n_bootstrap=500, slice_px=args.slice_px, slice_mm=args.slice_mm, stem_stride=args.stem_stride,
                           moco_val_every=args.val_every)
    endpoints, folder = (ENDPOINTS, "mil") if args.endpoints == "focal" else (LARGE_ENDPOINTS, "mil-large")
    rows = lesion_chain(raw, args.out, size, seed=args.seed, workers=2, endpoints=endpoints, mil_folder=folder)
    table = lesion_table(rows)
    print("| " + " | ".join(table[0]) + " |")
    print("|" + " --- |" * len(table[0]))
    for row in table:
        print("| " + " | ".join(row.values()) + " |")
    print()
    print("\n".join(paired_table({name: Path(row["mil"]) for name, row in rows.items()})))


if __name__ == "__main__":
    main()
