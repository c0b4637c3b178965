"""attnlab's experiment machinery: the half of `core` that trains and reports, never the attention itself.

`core.lab.harness` (devices, seeds, atomic checkpoints, `fit`), `core.lab.experiment` (results, metrics.json,
report.md, shared flags), `core.lab.datasets` (where data is found), `core.lab.distributed` (torchrun/DDP),
`core.lab.plots` (figures). The attention modules of `core` never import from here.
"""
