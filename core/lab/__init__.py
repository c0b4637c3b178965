"""attnlab's experiment machinery: the half of `core` that trains and reports, never the attention itself.

`core.lab.runner` (the one experiment runner: specs x seeds, run folders, resume, lock, metrics contract,
metrics.json and report.md, torchrun), `core.lab.harness` (devices, seeds, atomic checkpoints, `fit`, early
stopping objects), `core.lab.schedule` (warm-up + cosine counted in steps), `core.lab.cli` (shared flags,
checks at the door, one-line errors), `core.lab.experiment` (results, metrics.json, report.md),
`core.lab.datasets` (where data is found), `core.lab.distributed` (torchrun/DDP), `core.lab.plots` (figures).
The attention modules of `core` never import from here.
"""
