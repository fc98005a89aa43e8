"""Anonymization of radiographs before they are shared (PriCheXy-Net style).

* :mod:`~primia.anonymize.generators` — the flow-field and noise generators.

Training against a re-identification verifier, applying to a dataset and the linkage
evaluation are not built yet (see the README's status table).
"""

from primia.anonymize.generators import FlowFieldGenerator, NoiseGenerator, UNet

__all__ = ["FlowFieldGenerator", "NoiseGenerator", "UNet"]
