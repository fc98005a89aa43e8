"""Encrypted inference with CrypTen: the model owner never sees the image, the data owner
never sees the weights, and the crypto provider (CrypTen's TTP dealer) sees neither.

:mod:`.compat` imports CrypTen on current PyTorch; :mod:`.encrypted` runs primia's models
on secret-shared tensors; :mod:`.parties` is what each of the three processes runs.
"""
