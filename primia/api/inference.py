"""Encrypted inference's three parties, from Python: what ``primia infer serve``,
``primia infer crypto-provider`` and ``primia infer predict`` do.

* the **model owner** serves a trained model: :func:`model_owner_server` with a
  :class:`ModelOwnerConfig`;
* the **crypto provider** deals the Beaver triples: :func:`crypto_provider_server` with a
  :class:`CryptoProviderConfig`;
* the **data owner** (the hospital with the images) asks for predictions:
  :func:`predict` with a :class:`DataOwnerConfig`, returning :class:`Prediction`.
"""

from primia.inference.party_config import (
    CryptoProviderConfig,
    DataOwnerConfig,
    ModelOwnerConfig,
    load_crypto_provider_config,
    load_data_owner_config,
    load_model_owner_config,
)
from primia.rpc.inference_client import (
    Prediction,
    PredictionFailed,
    ServedModel,
    describe_model,
    predict,
)
from primia.rpc.inference_server import InferenceServer, crypto_provider_server, model_owner_server

__all__ = [
    "CryptoProviderConfig",
    "DataOwnerConfig",
    "InferenceServer",
    "ModelOwnerConfig",
    "Prediction",
    "PredictionFailed",
    "ServedModel",
    "crypto_provider_server",
    "describe_model",
    "load_crypto_provider_config",
    "load_data_owner_config",
    "load_model_owner_config",
    "model_owner_server",
    "predict",
]
