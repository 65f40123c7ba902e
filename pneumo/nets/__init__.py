"""The networks: Keras builders for U-Net and Double-UNet (``networks``), the first
encoders and their registry (``encoders``), ImageNet weights fetched at training set-up
(``pretrained``) and the training losses (``losses``)."""
