"""attnlab's tour: the one package that stands above the four domains.

`python -m attnlab` runs the core lessons and each domain's quick compare and writes one self-contained
page (`runs/tour/index.html`) and `report.md`. `core` and the domains never import this package.
"""
