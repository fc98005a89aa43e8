"""The domain-transfer matrix: models trained at each site (with and without DP) and the
federated model, each tested at every site, run by a coordinator over real nodes.

* :mod:`~primia.transfer.matrix` — the plan of models and the steps that train and
  evaluate them (transport-free, over a :class:`~primia.federated.registry.NodeRegistry`);
* :mod:`~primia.transfer.run` — serve the nodes and run the matrix
  (``primia transfer-matrix``);
* :mod:`~primia.transfer.analysis` — the figures (drops, DP vs non-DP, subgroups) and
  :mod:`~primia.transfer.report` — the files (JSON, CSV, heatmaps, HTML).

It sits above :mod:`primia.federated` and :mod:`primia.rpc`: it drives a coordinator; the
statistics it reports come from :mod:`primia.evaluate`.
"""
