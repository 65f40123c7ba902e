"""Measuring a model: metrics (``metrics``), the card's figures and their intervals
(``scoring``), operating points and mask thresholds fitted on the tune split
(``operating_points``), batch prediction to a submission (``batch``), encoding invariance
(``invariance``) and the human-readable card with its plots (``cardrender``)."""
