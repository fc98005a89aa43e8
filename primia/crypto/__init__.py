"""Cryptography for secure aggregation: fixed-point rings, masks, keys, secret sharing.

The building blocks (:mod:`ring`, :mod:`prg`, :mod:`keys`, :mod:`shamir`) are small and
transport-free; :mod:`primia.crypto.secagg` composes them into the protocol of Bonawitz
et al. (CCS 2017) as two explicit state machines, one per side.
"""
