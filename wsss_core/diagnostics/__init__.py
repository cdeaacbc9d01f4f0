"""Research diagnostics of a pipeline config, run as `wsss diagnose ...` (cli.py).

- labels (label_quality.py): how good the labels each stage hand-off trains on
  are, scored on the train split against its ground truth.
- fsl-pairs (fsl_pairs.py): whether a data set meets FSL's premise: how
  Eq. 12's sign splits its ground-truth pixel pairs.
- fsl-oracle (fsl_oracle.py): whether FSL's objective favours the true
  contours, and how far the CAM network follows it.
- seeds (seeds.py): FSL on - off at the CAM stage per lambda against the
  spread over seeds, and the classes each CAM run never learns.

Each module computes a report (a dataclass with `lines()`); the CLI prints it.
"""
