"""Labelled data: indexing images against the SIIM ground truth and the committed split
(``dataset``), the data config (``datacfg``) and decoded model-size examples shared by
training and evaluation (``examples``)."""
