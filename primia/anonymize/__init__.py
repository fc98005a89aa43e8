"""Anonymization of radiographs before they are shared (PriCheXy-Net style).

* :mod:`~primia.anonymize.generators` — the flow-field and noise generators, optionally
  weighted by a segmentation mask (:func:`guidance_weight`);
* :mod:`~primia.anonymize.checkpoint` — a trained generator on disk;
* :mod:`~primia.anonymize.training` — adversarial training against a re-identification
  verifier, with an auxiliary classifier (``primia anonymize train``);
* :mod:`~primia.anonymize.apply` — an anonymized copy of a dataset (``apply``);
* :mod:`~primia.anonymize.evaluation` — the linkage attack and the cost to
  classification (``evaluate``).
"""

from primia.anonymize.generators import (
    FlowFieldGenerator,
    NoiseGenerator,
    UNet,
    guidance_weight,
)

__all__ = ["FlowFieldGenerator", "NoiseGenerator", "UNet", "guidance_weight"]
