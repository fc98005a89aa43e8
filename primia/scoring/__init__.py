"""A model meets data: scores of a model on a dataset (:mod:`~primia.scoring.predict`) and
``primia evaluate`` of a checkpoint on a data folder (:mod:`~primia.scoring.checkpoint`).

The statistics these scores feed are in :mod:`primia.evaluate`, which knows no models.
"""
